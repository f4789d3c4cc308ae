//! Reading a TLS ClientHello's server name, without terminating TLS: how a
//! tunnel is classified as `tls` and how domain fronting is caught (a
//! CONNECT to one host whose TLS names another).

/// What the first bytes of a tunnel are.
#[derive(Debug, PartialEq, Eq)]
pub enum Hello {
    /// Not a TLS record: a `tcp` tunnel.
    NotTls,
    /// A TLS handshake record, not complete yet: read more.
    Partial,
    /// A ClientHello, with its SNI if it has one.
    Tls(Option<String>),
}

/// The most a ClientHello record may take (one TLS record).
pub const MAX_HELLO: usize = 16 * 1024 + 5;

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.b.len() < n {
            return None;
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| usize::from(b[0]))
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(b[0]) << 8 | usize::from(b[1]))
    }
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(n)
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(n)
    }
}

/// Classifies the first bytes a client sent into a tunnel.
pub fn parse(buf: &[u8]) -> Hello {
    // TLS record: type 22 (handshake), version 3.x.
    if buf.is_empty() {
        return Hello::Partial;
    }
    if buf[0] != 22 || (buf.len() > 1 && buf[1] != 3) {
        return Hello::NotTls;
    }
    if buf.len() < 5 {
        return Hello::Partial;
    }
    let len = usize::from(buf[3]) << 8 | usize::from(buf[4]);
    if buf.len() < 5 + len {
        return if 5 + len > MAX_HELLO {
            Hello::NotTls
        } else {
            Hello::Partial
        };
    }
    let mut r = Reader {
        b: &buf[5..5 + len],
    };
    // Handshake header: type 1 (ClientHello) and a 24-bit length.
    if r.u8() != Some(1) {
        return Hello::NotTls;
    }
    let Some(_len) = r.take(3) else {
        return Hello::NotTls;
    };
    let sni = (|| {
        r.take(2)?; // legacy version
        r.take(32)?; // random
        r.vec8()?; // session id
        r.vec16()?; // cipher suites
        r.vec8()?; // compression methods
        let mut ext = Reader { b: r.vec16()? };
        while !ext.b.is_empty() {
            let ty = ext.u16()?;
            let body = ext.vec16()?;
            if ty == 0 {
                let mut list = Reader {
                    b: Reader { b: body }.vec16()?,
                };
                while !list.b.is_empty() {
                    let name_type = list.u8()?;
                    let name = list.vec16()?;
                    if name_type == 0 {
                        return Some(Some(String::from_utf8_lossy(name).into_owned()));
                    }
                }
            }
        }
        Some(None)
    })();
    match sni {
        Some(name) => Hello::Tls(name),
        // A handshake record that does not parse as a ClientHello is not
        // something veto can vouch for as TLS.
        None => Hello::NotTls,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ClientHello with the given SNI.
    pub fn hello(sni: Option<&str>) -> Vec<u8> {
        let mut ext = Vec::new();
        if let Some(name) = sni {
            let n = name.as_bytes();
            let mut list = vec![0u8];
            list.extend((n.len() as u16).to_be_bytes());
            list.extend(n);
            let mut body = (list.len() as u16).to_be_bytes().to_vec();
            body.extend(list);
            ext.extend(0u16.to_be_bytes());
            ext.extend((body.len() as u16).to_be_bytes());
            ext.extend(body);
        }
        let mut ch = vec![3, 3];
        ch.extend([7u8; 32]);
        ch.push(0);
        ch.extend(2u16.to_be_bytes());
        ch.extend([0x13, 0x01]);
        ch.extend([1, 0]);
        ch.extend((ext.len() as u16).to_be_bytes());
        ch.extend(ext);
        let mut hs = vec![1];
        hs.extend(&(ch.len() as u32).to_be_bytes()[1..]);
        hs.extend(ch);
        let mut rec = vec![22, 3, 1];
        rec.extend((hs.len() as u16).to_be_bytes());
        rec.extend(hs);
        rec
    }

    #[test]
    fn classifies() {
        assert_eq!(
            parse(&hello(Some("api.example.com"))),
            Hello::Tls(Some("api.example.com".into()))
        );
        assert_eq!(parse(&hello(None)), Hello::Tls(None));
        let h = hello(Some("a.b"));
        assert_eq!(parse(&h[..h.len() - 3]), Hello::Partial);
        assert_eq!(parse(b"SSH-2.0-OpenSSH_9.6\r\n"), Hello::NotTls);
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Hello::NotTls);
        assert_eq!(parse(&[22, 3, 1, 0, 2, 2, 0]), Hello::NotTls);
        for cut in 0..h.len() {
            let _ = parse(&h[..cut]);
        }
    }
}
