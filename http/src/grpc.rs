//! Recognises gRPC length-prefixed messages in a body, piece by piece.

/// Whether a `content-type` is gRPC (`application/grpc`, `application/grpc+proto`, ...).
#[must_use]
pub fn is_grpc(content_type: Option<&str>) -> bool {
    const GRPC: &str = "application/grpc";
    content_type.is_some_and(|ct| {
        let ct = ct.trim().as_bytes();
        ct.get(..GRPC.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(GRPC.as_bytes()))
            && matches!(ct.get(GRPC.len()), None | Some(b'+' | b';'))
    })
}

/// Counts gRPC messages (1 flag byte, 4-byte big-endian length, payload) across body pieces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrpcCounter {
    prefix: [u8; 5],
    prefix_len: usize,
    payload_left: u64,
    messages: u64,
}

impl GrpcCounter {
    /// Feeds one body piece.
    pub fn push(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.payload_left > 0 {
                let n =
                    usize::try_from(self.payload_left).map_or(data.len(), |p| p.min(data.len()));
                self.payload_left -= n as u64;
                data = &data[n..];
                continue;
            }
            let n = (5 - self.prefix_len).min(data.len());
            self.prefix[self.prefix_len..self.prefix_len + n].copy_from_slice(&data[..n]);
            self.prefix_len += n;
            data = &data[n..];
            if self.prefix_len == 5 {
                let len = u32::from_be_bytes([
                    self.prefix[1],
                    self.prefix[2],
                    self.prefix[3],
                    self.prefix[4],
                ]);
                self.payload_left = u64::from(len);
                self.prefix_len = 0;
                self.messages += 1;
            }
        }
    }

    /// Messages whose prefix was seen.
    #[must_use]
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// Whether the body ended on a message boundary.
    #[must_use]
    pub fn is_aligned(&self) -> bool {
        self.payload_left == 0 && self.prefix_len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0];
        v.extend_from_slice(&u32::try_from(payload.len()).expect("small").to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn counts_messages_split_anywhere() {
        let mut body = frame(b"hello");
        body.extend(frame(b""));
        body.extend(frame(&[7u8; 300]));
        for piece in 1..body.len() {
            let mut c = GrpcCounter::default();
            body.chunks(piece).for_each(|p| c.push(p));
            assert_eq!(c.messages(), 3, "piece {piece}");
            assert!(c.is_aligned());
        }
    }

    #[test]
    fn recognises_grpc_content_types() {
        assert!(is_grpc(Some("application/grpc")));
        assert!(is_grpc(Some("application/grpc+proto")));
        assert!(is_grpc(Some(" Application/GRPC; charset=x")));
        assert!(!is_grpc(Some("application/grp")));
        assert!(!is_grpc(Some("application/grpc-web")));
        assert!(!is_grpc(Some("application/json")));
        assert!(!is_grpc(None));
    }
}
