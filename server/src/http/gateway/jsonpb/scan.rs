//! JSON syntax as Go's `encoding/json` checks it, with its error texts.
//!
//! etcd's gateway answers a malformed body with the message of Go's JSON
//! scanner ("invalid character 'x' looking for beginning of value",
//! "unexpected EOF", ...), and clients and the HTTP comparison see it, so
//! the scanner here gives the same message for the same input. It is
//! iterative (an explicit stack, bounded at Go's 10,000 levels), so no
//! input can exhaust the stack.

/// Go's limit on nested objects and arrays.
const MAX_DEPTH: usize = 10_000;

/// Why a value could not be scanned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The input ended inside the value.
    Eof,
    /// A syntax error, with Go's text.
    Syntax(String),
}

/// Go's `quoteChar`: how a scanner error names the offending byte.
fn quote_char(c: u8) -> String {
    match c {
        b'\'' => r"'\''".to_string(),
        b'"' => "'\"'".to_string(),
        b'\\' => r"'\\'".to_string(),
        0x07 => r"'\a'".to_string(),
        0x08 => r"'\b'".to_string(),
        0x0c => r"'\f'".to_string(),
        b'\n' => r"'\n'".to_string(),
        b'\r' => r"'\r'".to_string(),
        b'\t' => r"'\t'".to_string(),
        0x0b => r"'\v'".to_string(),
        0..=0x1f | 0x7f => format!(r"'\x{c:02x}'"),
        // Go converts the byte to the rune of the same number.
        0x80..=0xa0 | 0xad => format!(r"'\u{c:04x}'"),
        _ => format!("'{}'", char::from(c)),
    }
}

fn syntax(c: u8, context: &str) -> Stop {
    Stop::Syntax(format!("invalid character {} {context}", quote_char(c)))
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r')
}

/// The index of the first non-space byte at or after `i`.
pub fn skip_space(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && is_space(b[i]) {
        i += 1;
    }
    i
}

#[derive(Clone, Copy)]
enum Container {
    Object,
    Array,
}

/// Scans the string starting with the quote at `i`; returns the index
/// after its closing quote.
fn string(b: &[u8], mut i: usize) -> Result<usize, Stop> {
    i += 1;
    loop {
        let Some(&c) = b.get(i) else {
            return Err(Stop::Eof);
        };
        i += 1;
        match c {
            b'"' => return Ok(i),
            b'\\' => {
                let Some(&e) = b.get(i) else {
                    return Err(Stop::Eof);
                };
                i += 1;
                match e {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                    b'u' => {
                        for _ in 0..4 {
                            let Some(&h) = b.get(i) else {
                                return Err(Stop::Eof);
                            };
                            if !h.is_ascii_hexdigit() {
                                return Err(syntax(h, r"in \u hexadecimal character escape"));
                            }
                            i += 1;
                        }
                    }
                    _ => return Err(syntax(e, "in string escape code")),
                }
            }
            0..=0x1f => return Err(syntax(c, "in string literal")),
            _ => {}
        }
    }
}

/// Scans the number starting at `i`. A number is ended by the first byte
/// that cannot continue it; at the end of the input it is complete only if
/// `at_eof` (more bytes might continue it otherwise).
fn number(b: &[u8], mut i: usize, at_eof: bool) -> Result<usize, Stop> {
    let digits = |b: &[u8], mut i: usize| {
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        i
    };
    // What may follow, or an error if the input ends here.
    let need = |b: &[u8], i: usize| b.get(i).copied().ok_or(Stop::Eof);
    if b[i] == b'-' {
        i += 1;
        let c = need(b, i)?;
        if !c.is_ascii_digit() {
            return Err(syntax(c, "in numeric literal"));
        }
    }
    i = if b[i] == b'0' { i + 1 } else { digits(b, i) };
    if b.get(i) == Some(&b'.') {
        i += 1;
        let c = need(b, i)?;
        if !c.is_ascii_digit() {
            return Err(syntax(c, "after decimal point in numeric literal"));
        }
        i = digits(b, i);
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let c = need(b, i)?;
        if !c.is_ascii_digit() {
            return Err(syntax(c, "in exponent of numeric literal"));
        }
        i = digits(b, i);
    }
    if i == b.len() && !at_eof {
        return Err(Stop::Eof);
    }
    Ok(i)
}

fn literal(b: &[u8], i: usize, word: &'static str) -> Result<usize, Stop> {
    for (k, want) in word.bytes().enumerate().skip(1) {
        let c = *b.get(i + k).ok_or(Stop::Eof)?;
        if c != want {
            return Err(syntax(
                c,
                &format!("in literal {word} (expecting '{}')", char::from(want)),
            ));
        }
    }
    Ok(i + word.len())
}

/// Scans one value starting at the first non-space byte `i`; returns the
/// index just past it. `at_eof`: the input is complete (a trailing number
/// ends there).
pub fn value(b: &[u8], mut i: usize, at_eof: bool) -> Result<usize, Stop> {
    let mut stack: Vec<Container> = Vec::new();
    'value: loop {
        i = skip_space(b, i);
        let c = *b.get(i).ok_or(Stop::Eof)?;
        match c {
            b'{' | b'[' => {
                if stack.len() >= MAX_DEPTH {
                    return Err(syntax(c, "exceeded max depth"));
                }
                i = skip_space(b, i + 1);
                let next = *b.get(i).ok_or(Stop::Eof)?;
                if c == b'{' {
                    if next == b'}' {
                        i += 1;
                    } else {
                        stack.push(Container::Object);
                        i = key(b, i)?;
                        continue 'value;
                    }
                } else if next == b']' {
                    i += 1;
                } else {
                    stack.push(Container::Array);
                    continue 'value;
                }
            }
            b'"' => i = string(b, i)?,
            b'-' | b'0'..=b'9' => i = number(b, i, at_eof || !stack.is_empty())?,
            b't' => i = literal(b, i, "true")?,
            b'f' => i = literal(b, i, "false")?,
            b'n' => i = literal(b, i, "null")?,
            _ => return Err(syntax(c, "looking for beginning of value")),
        }
        // After a value: close containers or go on to the next element.
        loop {
            let Some(&top) = stack.last() else {
                return Ok(i);
            };
            i = skip_space(b, i);
            let c = *b.get(i).ok_or(Stop::Eof)?;
            match (top, c) {
                (Container::Object, b',') => {
                    i = key(b, skip_space(b, i + 1))?;
                    continue 'value;
                }
                (Container::Array, b',') => {
                    i += 1;
                    continue 'value;
                }
                (Container::Object, b'}') | (Container::Array, b']') => {
                    stack.pop();
                    i += 1;
                }
                (Container::Object, _) => return Err(syntax(c, "after object key:value pair")),
                (Container::Array, _) => return Err(syntax(c, "after array element")),
            }
        }
    }
}

/// Scans an object key and its colon, from the first non-space byte `i`.
fn key(b: &[u8], i: usize) -> Result<usize, Stop> {
    let c = *b.get(i).ok_or(Stop::Eof)?;
    if c != b'"' {
        return Err(syntax(c, "looking for beginning of object key string"));
    }
    let i = skip_space(b, string(b, i)?);
    let c = *b.get(i).ok_or(Stop::Eof)?;
    if c != b':' {
        return Err(syntax(c, "after object key"));
    }
    Ok(i + 1)
}

/// Go's `json.Unmarshal` syntax check of a whole input: one value and
/// nothing but spaces after it.
pub fn check_valid(b: &[u8]) -> Result<(), String> {
    let start = skip_space(b, 0);
    let end = value(b, start, true).map_err(|stop| match stop {
        Stop::Eof => "unexpected end of JSON input".to_string(),
        Stop::Syntax(message) => message,
    })?;
    let rest = skip_space(b, end);
    match b.get(rest) {
        None => Ok(()),
        Some(&c) => match syntax(c, "after top-level value") {
            Stop::Syntax(message) => Err(message),
            Stop::Eof => Err("unexpected end of JSON input".to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Go 1.16's texts for the same inputs (from `json.Unmarshal` into a
    /// `json.RawMessage`).
    #[test]
    fn go_messages() {
        let cases: &[(&str, &str)] = &[
            (
                "abc",
                "invalid character 'a' looking for beginning of value",
            ),
            ("", "unexpected end of JSON input"),
            ("{\"a\":1", "unexpected end of JSON input"),
            ("{\"a\" 1}", "invalid character '1' after object key"),
            (
                "{\"a\":1 2}",
                "invalid character '2' after object key:value pair",
            ),
            ("[1 2]", "invalid character '2' after array element"),
            (
                "{1:2}",
                "invalid character '1' looking for beginning of object key string",
            ),
            ("5x", "invalid character 'x' after top-level value"),
            ("01", "invalid character '1' after top-level value"),
            ("-x", "invalid character 'x' in numeric literal"),
            (
                "1.x",
                "invalid character 'x' after decimal point in numeric literal",
            ),
            (
                "1ex",
                "invalid character 'x' in exponent of numeric literal",
            ),
            ("tru", "unexpected end of JSON input"),
            (
                "trux",
                "invalid character 'x' in literal true (expecting 'e')",
            ),
            ("nul", "unexpected end of JSON input"),
            ("\"\\x\"", "invalid character 'x' in string escape code"),
            (
                "\"\\u12g4\"",
                "invalid character 'g' in \\u hexadecimal character escape",
            ),
            ("\"a\nb\"", "invalid character '\\n' in string literal"),
            (
                "'a'",
                "invalid character '\\'' looking for beginning of value",
            ),
            ("}", "invalid character '}' looking for beginning of value"),
        ];
        for (input, want) in cases {
            assert_eq!(
                check_valid(input.as_bytes()),
                Err(want.to_string()),
                "{input:?}"
            );
        }
        for ok in [
            "{}",
            " [1, {\"a\": [true, false, null]}] ",
            "-0.5e+3",
            "\"\\u00e9\"",
        ] {
            assert_eq!(check_valid(ok.as_bytes()), Ok(()), "{ok:?}");
        }
    }

    #[test]
    fn values_in_a_stream() {
        let b = br#"{"a":1} {"b":[2]}"#;
        let end = value(b, 0, false).unwrap();
        assert_eq!(&b[..end], br#"{"a":1}"#);
        let start = skip_space(b, end);
        assert_eq!(value(b, start, false), Ok(b.len()));
        // Incomplete until the end of the input is known.
        assert_eq!(value(b"{\"a\":", 0, false), Err(Stop::Eof));
        assert_eq!(value(b"12", 0, false), Err(Stop::Eof));
        assert_eq!(value(b"12", 0, true), Ok(2));
    }

    #[test]
    fn depth_is_bounded() {
        let deep = "[".repeat(20_000);
        assert_eq!(
            check_valid(deep.as_bytes()),
            Err("invalid character '[' exceeded max depth".to_string())
        );
    }
}
