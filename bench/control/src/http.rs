//! A minimal HTTP/1.1 keep-alive client on a tokio `TcpStream`, so the load generator spends as
//! little of the machine's two cores as possible: requests are pre-encoded bytes, responses must
//! carry `Content-Length` (every non-streaming grantfs answer does). Event streams are read raw.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Encodes one request. `body` is JSON.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&[u8]>,
) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\n");
    if let Some(b) = bearer {
        r.push_str("authorization: Bearer ");
        r.push_str(b);
        r.push_str("\r\n");
    }
    match body {
        Some(b) => {
            r.push_str(&format!(
                "content-type: application/json\r\ncontent-length: {}\r\n\r\n",
                b.len()
            ));
            let mut v = r.into_bytes();
            v.extend_from_slice(b);
            v
        }
        None => {
            r.push_str("\r\n");
            r.into_bytes()
        }
    }
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Splits a response head: status and content-length (`None` when absent).
fn parse_head(head: &[u8]) -> io::Result<(u16, Option<usize>)> {
    let text = std::str::from_utf8(head).map_err(|_| bad("response head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
    let mut len = None;
    for l in lines {
        if let Some((k, v)) = l.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = Some(v.trim().parse().map_err(|_| bad("bad content-length"))?);
        }
    }
    Ok((status, len))
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(2048),
        })
    }

    /// Sends one request and reads its whole answer (keep-alive).
    pub async fn call(&mut self, req: &[u8]) -> io::Result<Response> {
        self.stream.write_all(req).await?;
        self.buf.clear();
        let head_end = loop {
            if let Some(p) = find(&self.buf, b"\r\n\r\n") {
                break p + 4;
            }
            self.fill().await?;
        };
        let (status, len) = parse_head(&self.buf[..head_end])?;
        let len = len.ok_or_else(|| bad("answer without content-length"))?;
        while self.buf.len() < head_end + len {
            self.fill().await?;
        }
        let body = self.buf[head_end..head_end + len].to_vec();
        Ok(Response { status, body })
    }

    /// Sends a GET of an event stream and returns the status; the stream's bytes follow through
    /// `wait_for`. A non-200 answer is returned with its body unread.
    pub async fn open_stream(&mut self, req: &[u8]) -> io::Result<u16> {
        self.stream.write_all(req).await?;
        self.buf.clear();
        let head_end = loop {
            if let Some(p) = find(&self.buf, b"\r\n\r\n") {
                break p + 4;
            }
            self.fill().await?;
        };
        let (status, _) = parse_head(&self.buf[..head_end])?;
        self.buf.drain(..head_end);
        Ok(status)
    }

    /// Reads the stream until `needle` has arrived; drops what came before it and the needle.
    pub async fn wait_for(&mut self, needle: &[u8]) -> io::Result<()> {
        loop {
            if let Some(p) = find(&self.buf, needle) {
                self.buf.drain(..p + needle.len());
                return Ok(());
            }
            // Keep a tail that may hold the needle's first bytes; drop the rest (keepalives).
            let keep = needle.len().min(self.buf.len());
            let cut = self.buf.len() - keep;
            self.buf.drain(..cut);
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed the connection",
            ));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}
