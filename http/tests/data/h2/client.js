// A node HTTP/2 client making sequential calls on one connection to the URL in argv[2].
'use strict';
const http2 = require('node:http2');

const session = http2.connect(process.argv[2]);
const calls = [
  ['GET', '/v1/models'],
  ['POST', '/v1/chat/completions', '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'],
  ['GET', '/v1/models/gpt-4o-mini'],
  ['POST', '/v1/chat/completions', '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"again"}]}'],
  ['GET', '/v1/limited'],
  ['GET', '/v1/limited'],
  ['GET', '/v1/models'],
];

function call(i) {
  if (i === calls.length) {
    session.close();
    return;
  }
  const [method, path, body] = calls[i];
  const headers = {
    ':method': method,
    ':path': path,
    authorization: 'Bearer sk-test-0123456789',
    'openai-organization': 'org-test',
    'user-agent': 'capture-client/1.0',
  };
  if (body) headers['content-type'] = 'application/json';
  const req = session.request(headers);
  req.on('response', () => {});
  req.on('data', () => {});
  req.on('end', () => setTimeout(() => call(i + 1), 20));
  req.end(body);
}
call(0);
