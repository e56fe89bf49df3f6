//! Just enough HTTP/1.1 for the daemon's API: one request per connection (the response says
//! `Connection: close`), GET and POST without a body, a bounded head read with a deadline.
//! Whatever a client sends, the answer is a response or a closed connection, never a panic.

use std::{
    io::{self, Read, Write},
    time::{Duration, Instant},
};

/// The most a request's head may take: its request line and headers.
pub const MAX_HEAD: usize = 16 * 1024;
/// The most headers a request may have.
const MAX_HEADERS: usize = 64;
/// How long a client has to send its whole request head.
pub const HEAD_DEADLINE: Duration = Duration::from_secs(5);

/// A request's method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Reads.
    Get,
    /// Takes a snapshot.
    Post,
    /// Only the head of a GET's answer.
    Head,
}

/// A request, as far as the API reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Its method.
    pub method: Method,
    /// The path, percent-decoded: `/summary`.
    pub path: String,
    /// The query's parameters, percent-decoded, in order.
    pub query: Vec<(String, String)>,
}

impl Request {
    /// The value of parameter `name`, if given (the last, if given more than once).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a request could not be read: each has its status and a one-line reason.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BadRequest {
    /// Not HTTP as the API takes it.
    #[error("{0}")]
    Malformed(&'static str),
    /// The head is larger than [`MAX_HEAD`] or has too many headers.
    #[error(
        "the request head is larger than {MAX_HEAD} bytes or has more than {MAX_HEADERS} headers"
    )]
    TooLarge,
    /// A method the API does not take.
    #[error("method {0} is not allowed: the API takes GET, HEAD and POST")]
    Method(String),
    /// A request with a body.
    #[error("requests take their parameters in the query string, not in a body")]
    Body,
    /// The client was too slow or went away.
    #[error("the request was not sent in time")]
    Timeout,
}

impl BadRequest {
    /// Its status code.
    pub fn status(&self) -> u16 {
        match self {
            BadRequest::Malformed(_) => 400,
            BadRequest::TooLarge => 431,
            BadRequest::Method(_) => 405,
            BadRequest::Body => 413,
            BadRequest::Timeout => 408,
        }
    }
}

/// Reads one request head from `r` (a stream with a read timeout set), within [`MAX_HEAD`]
/// bytes and [`HEAD_DEADLINE`].
pub fn read_request(r: &mut impl Read) -> Result<Request, BadRequest> {
    let started = Instant::now();
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        if let Some(end) = head_end(&buf) {
            return parse_head(&buf[..end]);
        }
        if buf.len() >= MAX_HEAD {
            return Err(BadRequest::TooLarge);
        }
        if started.elapsed() > HEAD_DEADLINE {
            return Err(BadRequest::Timeout);
        }
        let room = chunk.len().min(MAX_HEAD - buf.len());
        match r.read(&mut chunk[..room]) {
            Ok(0) => return Err(BadRequest::Malformed("the connection closed mid-request")),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(BadRequest::Timeout),
        }
    }
}

/// Where the head ends (after its blank line), if it has.
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Parses a whole request head (request line, headers, blank line).
pub fn parse_head(head: &[u8]) -> Result<Request, BadRequest> {
    let text =
        std::str::from_utf8(head).map_err(|_| BadRequest::Malformed("the request is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let line = lines.next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(BadRequest::Malformed(
            "the request line is not `METHOD /path HTTP/1.1`",
        ));
    };
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(BadRequest::Malformed(
            "only HTTP/1.0 and HTTP/1.1 are spoken",
        ));
    }
    let method = match method {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "HEAD" => Method::Head,
        m if !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase()) => {
            return Err(BadRequest::Method(m.to_string()));
        }
        _ => return Err(BadRequest::Malformed("the method is not a token")),
    };
    let mut headers = 0;
    for h in lines.take_while(|l| !l.is_empty()) {
        headers += 1;
        if headers > MAX_HEADERS {
            return Err(BadRequest::TooLarge);
        }
        let Some((name, value)) = h.split_once(':') else {
            return Err(BadRequest::Malformed("a header line has no colon"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") && value != "0" {
            return Err(BadRequest::Body);
        }
        if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(BadRequest::Body);
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if !path.starts_with('/') {
        return Err(BadRequest::Malformed("the path must start with /"));
    }
    let path = decode(path).ok_or(BadRequest::Malformed("the path's %-escapes are not valid"))?;
    let query = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            Some((decode(k)?, decode(v)?))
        })
        .collect::<Option<Vec<_>>>()
        .ok_or(BadRequest::Malformed(
            "the query's %-escapes are not valid UTF-8",
        ))?;
    Ok(Request {
        method,
        path,
        query,
    })
}

/// Percent-decodes `s` (and `+` as a space, as forms send it); `None` for a bad escape or
/// bytes that are not UTF-8.
pub fn decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Percent-encodes a query value: everything but unreserved characters.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An answer.
#[derive(Debug)]
pub struct Response {
    /// Its status code.
    pub status: u16,
    /// Its content type.
    pub content_type: &'static str,
    /// Its body.
    pub body: Vec<u8>,
    /// Extra headers (name, value).
    pub headers: Vec<(&'static str, String)>,
}

/// JSON Lines, the CLI's `--format json`.
pub const JSON: &str = "application/x-ndjson";
/// Text: tables, errors, Prometheus' format.
pub const TEXT: &str = "text/plain; charset=utf-8";

impl Response {
    /// A 200 with `body`.
    pub fn ok(content_type: &'static str, body: Vec<u8>) -> Self {
        Response {
            status: 200,
            content_type,
            body,
            headers: Vec::new(),
        }
    }

    /// An error: `status` with its one-line reason (and a newline).
    pub fn error(status: u16, why: impl std::fmt::Display) -> Self {
        let line = why.to_string().replace('\n', " ");
        Response {
            status,
            content_type: TEXT,
            body: format!("{line}\n").into_bytes(),
            headers: Vec::new(),
        }
    }

    /// Writes the response; `head_only` leaves the body out (HEAD).
    pub fn write_to(&self, w: &mut impl Write, head_only: bool) -> io::Result<()> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        w.write_all(head.as_bytes())?;
        if !head_only {
            w.write_all(&self.body)?;
        }
        w.flush()
    }
}

/// A status code's reason phrase.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

/// A response as a client reads it.
#[derive(Debug)]
pub struct Answer {
    /// Its status code.
    pub status: u16,
    /// Its body.
    pub body: Vec<u8>,
}

/// Reads a whole response (the server closes the connection after it).
pub fn read_answer(r: &mut impl Read) -> io::Result<Answer> {
    let mut all = Vec::new();
    r.read_to_end(&mut all)?;
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "the daemon's answer is not HTTP",
        )
    };
    let end = head_end(&all).ok_or_else(bad)?;
    let head = std::str::from_utf8(&all[..end]).map_err(|_| bad())?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    let length = head.split("\r\n").find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())?
    });
    let mut body = all.split_off(end);
    if let Some(n) = length {
        if body.len() < n {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the daemon's answer was cut short",
            ));
        }
        body.truncate(n);
    }
    Ok(Answer { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse() {
        let r =
            parse_head(b"GET /summary?pid=12&site=a%2Bb+c&x HTTP/1.1\r\nHost: m\r\n\r\n").unwrap();
        assert_eq!(r.method, Method::Get);
        assert_eq!(r.path, "/summary");
        assert_eq!(r.param("pid"), Some("12"));
        assert_eq!(r.param("site"), Some("a+b c"));
        assert_eq!(r.param("x"), Some(""));
        assert_eq!(r.param("y"), None);
    }

    #[test]
    fn bad_requests_say_why() {
        let bad = |s: &[u8]| parse_head(s).unwrap_err();
        assert_eq!(bad(b"GET /\r\n\r\n").status(), 400);
        assert_eq!(bad(b"DELETE / HTTP/1.1\r\n\r\n").status(), 405);
        assert_eq!(bad(b"GET / HTTP/2\r\n\r\n").status(), 400);
        assert_eq!(bad(b"GET x HTTP/1.1\r\n\r\n").status(), 400);
        assert_eq!(bad(b"GET /?a=%zz HTTP/1.1\r\n\r\n").status(), 400);
        assert_eq!(bad(b"GET /?a=%ff HTTP/1.1\r\n\r\n").status(), 400);
        assert_eq!(bad(b"GET / HTTP/1.1\r\nbroken\r\n\r\n").status(), 400);
        assert_eq!(
            bad(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n").status(),
            413
        );
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "A: b\r\n".repeat(65));
        assert_eq!(bad(many.as_bytes()), BadRequest::TooLarge);
        assert!(parse_head(b"GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n").is_ok());
    }

    #[test]
    fn heads_are_read_within_their_limit() {
        let mut ok: &[u8] = b"GET /metrics HTTP/1.1\r\n\r\ntrailing";
        assert_eq!(read_request(&mut ok).unwrap().path, "/metrics");
        let big = vec![b'a'; MAX_HEAD + 10];
        assert_eq!(read_request(&mut &big[..]), Err(BadRequest::TooLarge));
        let mut cut: &[u8] = b"GET / HTTP/1.1\r\n";
        assert_eq!(read_request(&mut cut).unwrap_err().status(), 400);
    }

    /// Random bytes, and real requests cut and corrupted at random, never panic the parser.
    #[test]
    fn fuzzed_heads_never_panic() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let real = b"GET /objects?pid=1&site=%28a%7Cb%29&top=5 HTTP/1.1\r\nHost: x\r\n\r\n";
        for _ in 0..200_000 {
            let n = usize::try_from(next() % 96).unwrap_or(0);
            let mut buf: Vec<u8> = if next() % 2 == 0 {
                (0..n)
                    .map(|_| u8::try_from(next() & 0xff).unwrap_or(0))
                    .collect()
            } else {
                let mut b = real.to_vec();
                for _ in 0..(next() % 4) {
                    let i = usize::try_from(next()).unwrap_or(0) % b.len();
                    b[i] = u8::try_from(next() & 0xff).unwrap_or(0);
                }
                b.truncate(usize::try_from(next()).unwrap_or(0) % (b.len() + 1));
                b
            };
            buf.extend_from_slice(b"\r\n\r\n");
            let _ = parse_head(&buf);
            let _ = read_request(&mut &buf[..]);
            let _ = decode(&String::from_utf8_lossy(&buf));
        }
    }

    #[test]
    fn values_round_trip_through_encoding() {
        for s in ["a b", "(x|y)+", "100%", "naïve", ""] {
            assert_eq!(decode(&encode(s)).as_deref(), Some(s));
        }
    }

    #[test]
    fn answers_are_read_back() {
        let r = Response::error(404, "no such pid");
        let mut out = Vec::new();
        r.write_to(&mut out, false).unwrap();
        let a = read_answer(&mut &out[..]).unwrap();
        assert_eq!((a.status, a.body.as_slice()), (404, &b"no such pid\n"[..]));
    }
}
