//! Content codings of request bodies: gzip and deflate are decoded for the
//! detectors (bounded, so a small bomb cannot become a large allocation),
//! and re-encoded after a redaction. Anything else cannot be inspected.

use flate2::Compression;
use flate2::read::{DeflateDecoder, MultiGzDecoder, ZlibDecoder};
use flate2::write::{GzEncoder, ZlibEncoder};
use std::io::{Read, Write};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Coding {
    Identity,
    Gzip,
    Deflate,
    /// Named as it was sent.
    Other(String),
}

impl Coding {
    pub fn of(headers: &http::HeaderMap) -> Coding {
        let mut values = headers.get_all(http::header::CONTENT_ENCODING).iter();
        let Some(first) = values.next() else {
            return Coding::Identity;
        };
        let v = first.to_str().unwrap_or("?").trim().to_ascii_lowercase();
        if values.next().is_some() || v.contains(',') {
            return Coding::Other(v);
        }
        match v.as_str() {
            "" | "identity" => Coding::Identity,
            "gzip" | "x-gzip" => Coding::Gzip,
            "deflate" => Coding::Deflate,
            _ => Coding::Other(v),
        }
    }
}

/// Decodes at most `limit` bytes. Err: why it cannot be inspected.
pub fn decode(coding: &Coding, raw: &[u8], limit: usize) -> Result<Vec<u8>, String> {
    let read_limited = |r: &mut dyn Read| -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        let n = r
            .take((limit as u64).saturating_add(1))
            .read_to_end(&mut out)
            .map_err(|e| format!("the body is not valid {coding:?} ({e})"))?;
        if n > limit {
            return Err(format!(
                "the decoded body is larger than the inspection limit ({limit} bytes)"
            ));
        }
        Ok(out)
    };
    match coding {
        Coding::Identity => Ok(raw.to_vec()),
        Coding::Gzip => read_limited(&mut MultiGzDecoder::new(raw)),
        // RFC 9110 says zlib; some clients send raw deflate: accept both.
        Coding::Deflate => match read_limited(&mut ZlibDecoder::new(raw)) {
            Ok(out) => Ok(out),
            // Over the limit is final; not zlib may still be raw deflate.
            Err(e) if e.contains("inspection limit") => Err(e),
            Err(_) => read_limited(&mut DeflateDecoder::new(raw)),
        },
        Coding::Other(name) => Err(format!(
            "the body is `{name}`-encoded, which veto does not decode"
        )),
    }
}

/// Encodes a (redacted) body back into the coding it arrived in.
pub fn encode(coding: &Coding, plain: &[u8]) -> std::io::Result<Vec<u8>> {
    match coding {
        Coding::Gzip => {
            let mut e = GzEncoder::new(Vec::new(), Compression::fast());
            e.write_all(plain)?;
            e.finish()
        }
        Coding::Deflate => {
            let mut e = ZlibEncoder::new(Vec::new(), Compression::fast());
            e.write_all(plain)?;
            e.finish()
        }
        _ => Ok(plain.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_limits() {
        let text = b"hello ada@example.org".repeat(10);
        for c in [Coding::Gzip, Coding::Deflate] {
            let enc = encode(&c, &text).unwrap();
            assert_eq!(decode(&c, &enc, 1 << 20).unwrap(), text);
            assert!(
                decode(&c, &enc, 10)
                    .unwrap_err()
                    .contains("inspection limit")
            );
        }
        let raw = {
            let mut e = flate2::write::DeflateEncoder::new(Vec::new(), Compression::fast());
            e.write_all(&text).unwrap();
            e.finish().unwrap()
        };
        assert_eq!(decode(&Coding::Deflate, &raw, 1 << 20).unwrap(), text);
        assert!(decode(&Coding::Gzip, b"not gzip", 100).is_err());
        // A bomb: 64 MiB of zeros in a few KiB, against a 1 MiB limit.
        let bomb = encode(&Coding::Gzip, &vec![0u8; 64 << 20]).unwrap();
        assert!(bomb.len() < 1 << 20);
        assert!(decode(&Coding::Gzip, &bomb, 1 << 20).is_err());
    }
}
