// An HTTP/2 (cleartext, prior knowledge) API for the captures: JSON answers with the headers
// real APIs send, a 429 answered several times (so its status is indexed), and a gzip body.
'use strict';
const http2 = require('node:http2');
const zlib = require('node:zlib');

let n = 0;
const server = http2.createServer();
server.on('stream', (stream, headers) => {
  let body = '';
  stream.on('data', (c) => { body += c; });
  stream.on('end', () => {
    n += 1;
    const path = headers[':path'];
    const common = {
      'content-type': 'application/json',
      'x-request-id': `req_${1000 + n}`,
      'openai-processing-ms': String(100 + n),
      'x-ratelimit-remaining-requests': String(9999 - n),
    };
    if (path.startsWith('/v1/limited')) {
      stream.respond({ ':status': 429, ...common, 'retry-after': '1' });
      stream.end('{"error":{"type":"rate_limit"}}');
    } else if (path.startsWith('/v1/gzip')) {
      stream.respond({ ':status': 200, ...common, 'content-encoding': 'gzip' });
      stream.end(zlib.gzipSync(JSON.stringify({ ok: true, n })));
    } else if (headers[':method'] === 'POST') {
      stream.respond({ ':status': 201, ...common });
      stream.end(JSON.stringify({ id: `obj_${n}`, received: body.length }));
    } else {
      stream.respond({ ':status': 200, ...common });
      stream.end(JSON.stringify({ object: 'list', path, n }));
    }
  });
});
server.listen(0, '127.0.0.1', () => {
  console.log(server.address().port);
});
