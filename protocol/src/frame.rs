//! Length-prefixed framing: a 4-byte big-endian length, then a postcard body.
//!
//! Decoding never panics: every malformed or oversized frame is an error value,
//! and an incomplete buffer is reported as "need more bytes" rather than an error.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Hard maximum size of one frame body in bytes (1 MiB).
pub const MAX_FRAME_LEN: usize = 1 << 20;

const HEADER_LEN: usize = 4;

/// Errors from [`encode`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EncodeError {
    /// The encoded body is larger than [`MAX_FRAME_LEN`].
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// Encoded body length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The value could not be serialized.
    #[error("cannot encode message: {0}")]
    Serialize(String),
}

/// Errors from [`decode`] and [`FrameDecoder`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The length prefix announces a body larger than the limit.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// Announced body length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The body is not a valid encoding of the expected message type.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The body decoded but left unread bytes behind.
    #[error("malformed frame: {0} trailing bytes")]
    TrailingBytes(usize),
}

/// Encodes one message as a complete frame (header and body).
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, EncodeError> {
    let mut out = vec![0u8; HEADER_LEN];
    out = postcard::to_extend(msg, out).map_err(|e| EncodeError::Serialize(e.to_string()))?;
    let len = out.len() - HEADER_LEN;
    if len > MAX_FRAME_LEN {
        return Err(EncodeError::TooLarge {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    let prefix = u32::try_from(len)
        .map_err(|_| EncodeError::TooLarge {
            len,
            max: MAX_FRAME_LEN,
        })?
        .to_be_bytes();
    out[..HEADER_LEN].copy_from_slice(&prefix);
    Ok(out)
}

/// Decodes one frame from the front of `buf`.
///
/// Returns `Ok(None)` when `buf` does not hold a whole frame yet, or
/// `Ok(Some((message, consumed)))` with the number of bytes the frame used.
pub fn decode<T: DeserializeOwned>(buf: &[u8]) -> Result<Option<(T, usize)>, DecodeError> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let mut len_bytes = [0u8; HEADER_LEN];
    len_bytes.copy_from_slice(header);
    let len = u32::from_be_bytes(len_bytes) as usize;
    if len > MAX_FRAME_LEN {
        return Err(DecodeError::TooLarge {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    let Some(body) = buf.get(HEADER_LEN..HEADER_LEN + len) else {
        return Ok(None);
    };
    let (msg, rest) =
        postcard::take_from_bytes::<T>(body).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes(rest.len()));
    }
    Ok(Some((msg, HEADER_LEN + len)))
}

/// An incremental decoder: feed it bytes as they arrive, take frames out.
///
/// It never buffers more than one maximum-size frame plus its header: an
/// oversized length prefix is rejected as soon as the header is seen.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
}

impl FrameDecoder {
    /// Creates an empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes currently buffered.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// How many more bytes may be read before the next frame is complete or
    /// provably oversized; callers use it to bound their reads.
    pub fn wanted(&self) -> usize {
        match self.buf.get(..HEADER_LEN) {
            None => HEADER_LEN - self.buf.len(),
            Some(h) => {
                let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
                (HEADER_LEN + len.min(MAX_FRAME_LEN)).saturating_sub(self.buf.len())
            }
        }
    }

    /// Takes the next complete frame, if any. After an error the decoder's
    /// state is unspecified and the stream should be closed.
    pub fn next_frame<T: DeserializeOwned>(&mut self) -> Result<Option<T>, DecodeError> {
        match decode::<T>(&self.buf)? {
            None => Ok(None),
            Some((msg, used)) => {
                self.buf.drain(..used);
                Ok(Some(msg))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_then_complete() {
        let frame = encode(&(7u32, String::from("x"))).unwrap();
        for cut in 0..frame.len() {
            assert_eq!(decode::<(u32, String)>(&frame[..cut]).unwrap(), None);
        }
        let (v, used) = decode::<(u32, String)>(&frame).unwrap().unwrap();
        assert_eq!(v, (7, "x".to_string()));
        assert_eq!(used, frame.len());
    }

    #[test]
    fn oversized_header_rejected_before_body_arrives() {
        let mut buf = ((MAX_FRAME_LEN + 1) as u32).to_be_bytes().to_vec();
        buf.push(0);
        assert!(matches!(
            decode::<u32>(&buf),
            Err(DecodeError::TooLarge { .. })
        ));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut buf = 3u32.to_be_bytes().to_vec();
        buf.extend_from_slice(&[0xff, 0xff, 0xff]);
        assert!(decode::<(u64, String)>(&buf).is_err());
    }

    #[test]
    fn trailing_bytes_rejected() {
        let mut buf = 2u32.to_be_bytes().to_vec();
        buf.extend_from_slice(&[1, 2]);
        assert_eq!(decode::<u8>(&buf), Err(DecodeError::TrailingBytes(1)));
    }

    #[test]
    fn decoder_streams_multiple_frames() {
        let mut d = FrameDecoder::new();
        let mut bytes = encode(&1u16).unwrap();
        bytes.extend(encode(&2u16).unwrap());
        for b in &bytes {
            d.push(&[*b]);
        }
        assert_eq!(d.next_frame::<u16>().unwrap(), Some(1));
        assert_eq!(d.next_frame::<u16>().unwrap(), Some(2));
        assert_eq!(d.next_frame::<u16>().unwrap(), None);
    }
}
