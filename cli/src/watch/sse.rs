//! Server-Sent Events, the client's half: bytes in, events out.
//!
//! [`parse_line`] reads one line as the SSE specification does (a comment,
//! or a field and its value with one leading space dropped);
//! [`Decoder`] splits chunks into lines (`\n`, `\r\n` or `\r`, also when a
//! chunk ends mid-line or mid-character) and gathers fields until a blank
//! line dispatches the event.

/// One line of an event stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line<'a> {
    /// An empty line: dispatch the event gathered so far.
    Dispatch,
    /// A line starting with `:` (the server's keep-alive).
    Comment,
    /// `name: value` (or `name` alone, with an empty value).
    Field {
        /// The field's name (`id`, `event`, `data`, `retry`, or unknown).
        name: &'a str,
        /// The value, one leading space removed.
        value: &'a str,
    },
}

/// Reads one line (without its line terminator).
pub fn parse_line(line: &str) -> Line<'_> {
    if line.is_empty() {
        return Line::Dispatch;
    }
    if line.starts_with(':') {
        return Line::Comment;
    }
    match line.split_once(':') {
        Some((name, value)) => Line::Field {
            name,
            value: value.strip_prefix(' ').unwrap_or(value),
        },
        None => Line::Field {
            name: line,
            value: "",
        },
    }
}

/// One event as dispatched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The last event id the stream set (it carries over to later events
    /// that name none, as the specification says): what to resume from.
    pub id: Option<String>,
    /// The `event:` field; `message` when the event named none.
    pub event: String,
    /// The `data:` lines, joined by `\n`.
    pub data: String,
}

/// Turns the chunks of a stream into events.
#[derive(Debug, Default)]
pub struct Decoder {
    /// Bytes of a line not ended yet (maybe a character cut in two).
    pending: Vec<u8>,
    /// The previous chunk ended with `\r`: a `\n` opening the next one
    /// belongs to it.
    after_cr: bool,
    last_id: Option<String>,
    event: String,
    data: String,
    /// Whether a `data` field was seen since the last dispatch.
    has_data: bool,
}

impl Decoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// The events that `chunk` completes, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Event> {
        let mut out = Vec::new();
        let mut rest = chunk;
        if self.after_cr {
            self.after_cr = false;
            if let Some(tail) = rest.strip_prefix(b"\n") {
                rest = tail;
            }
        }
        while let Some(end) = rest.iter().position(|b| *b == b'\n' || *b == b'\r') {
            self.pending.extend_from_slice(&rest[..end]);
            let crlf = rest[end] == b'\r';
            rest = &rest[end + 1..];
            if crlf {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    None => self.after_cr = true,
                    Some(_) => {}
                }
            }
            let line = std::mem::take(&mut self.pending);
            if let Some(event) = self.line(&String::from_utf8_lossy(&line)) {
                out.push(event);
            }
        }
        self.pending.extend_from_slice(rest);
        out
    }

    fn line(&mut self, line: &str) -> Option<Event> {
        match parse_line(line) {
            Line::Comment => None,
            Line::Dispatch => {
                let event = std::mem::take(&mut self.event);
                let data = std::mem::take(&mut self.data);
                if !std::mem::take(&mut self.has_data) {
                    return None;
                }
                Some(Event {
                    id: self.last_id.clone(),
                    event: if event.is_empty() {
                        "message".to_owned()
                    } else {
                        event
                    },
                    data,
                })
            }
            Line::Field { name, value } => {
                match name {
                    "event" => value.clone_into(&mut self.event),
                    "data" => {
                        if self.has_data {
                            self.data.push('\n');
                        }
                        self.data.push_str(value);
                        self.has_data = true;
                    }
                    // An id with NUL is ignored, as the specification says.
                    "id" if !value.contains('\0') => self.last_id = Some(value.to_owned()),
                    // `retry` and unknown fields: the CLI has its own backoff.
                    _ => {}
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_read_as_the_specification_says() {
        assert_eq!(parse_line(""), Line::Dispatch);
        assert_eq!(parse_line(": keep-alive"), Line::Comment);
        assert_eq!(parse_line(":"), Line::Comment);
        assert_eq!(
            parse_line("id: 42"),
            Line::Field {
                name: "id",
                value: "42"
            }
        );
        assert_eq!(
            parse_line("data:{\"a\": 1}"),
            Line::Field {
                name: "data",
                value: "{\"a\": 1}"
            },
            "the space is optional"
        );
        assert_eq!(
            parse_line("data:  two"),
            Line::Field {
                name: "data",
                value: " two"
            },
            "only one space is dropped"
        );
        assert_eq!(
            parse_line("data: a:b"),
            Line::Field {
                name: "data",
                value: "a:b"
            },
            "the first colon splits"
        );
        assert_eq!(
            parse_line("data"),
            Line::Field {
                name: "data",
                value: ""
            }
        );
    }

    fn event(id: Option<&str>, event: &str, data: &str) -> Event {
        Event {
            id: id.map(str::to_owned),
            event: event.to_owned(),
            data: data.to_owned(),
        }
    }

    #[test]
    fn a_stream_decodes_into_events() {
        let mut d = Decoder::new();
        let got = d.push(
            b": ping\n\nid: 7\nevent: snapshot\ndata: {\"a\":1}\n\nevent: counts\ndata: x\ndata: y\n\n",
        );
        assert_eq!(
            got,
            vec![
                event(Some("7"), "snapshot", "{\"a\":1}"),
                event(Some("7"), "counts", "x\ny"),
            ],
            "comments dispatch nothing; the id carries over"
        );
        assert_eq!(
            d.push(b"data: plain\n\nevent: empty\n\n"),
            vec![event(Some("7"), "message", "plain")],
            "no event name is a message; no data, no event"
        );
    }

    #[test]
    fn chunks_may_cut_anywhere() {
        let whole = "id: 9\r\nevent: log\r\ndata: é ✓\r\n\r\nid: 10\revent: status\rdata: s\r\r";
        let want = vec![
            event(Some("9"), "log", "é ✓"),
            event(Some("10"), "status", "s"),
        ];
        for size in 1..whole.len() {
            let mut d = Decoder::new();
            let got: Vec<Event> = whole
                .as_bytes()
                .chunks(size)
                .flat_map(|c| d.push(c))
                .collect();
            assert_eq!(got, want, "chunks of {size} bytes");
        }
    }

    #[test]
    fn an_unfinished_event_waits_for_its_blank_line() {
        let mut d = Decoder::new();
        assert!(d.push(b"id: 1\nevent: counts\ndata: {}\n").is_empty());
        assert_eq!(d.push(b"\n"), vec![event(Some("1"), "counts", "{}")]);
        assert!(d.push(b"id: 2\0\ndata: z\n").is_empty());
        assert_eq!(
            d.push(b"\n"),
            vec![event(Some("1"), "message", "z")],
            "an id with NUL is ignored"
        );
    }
}
