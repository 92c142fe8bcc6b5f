//! `--log-outputs systemd/journal`: each JSON line sent to journald over its
//! native protocol, as etcd's journal writer does (MESSAGE is the line,
//! PRIORITY from its level, PACKAGE the caller's directory,
//! SYSLOG_IDENTIFIER the program's name); a line journald refuses goes to
//! stderr instead.

use std::io::Write as _;
use std::os::unix::net::UnixDatagram;

/// journald's native socket.
pub const SOCKET: &str = "/run/systemd/journal/socket";

/// A connection to journald.
#[derive(Debug)]
pub struct Journal {
    /// Connected to journald's socket.
    socket: UnixDatagram,
    /// SYSLOG_IDENTIFIER: the program's file name.
    identifier: String,
}

impl Journal {
    /// Connects to journald; etcd refuses to start without it too.
    pub fn connect() -> Result<Self, super::Error> {
        let socket = UnixDatagram::unbound()
            .and_then(|s| s.connect(SOCKET).map(|()| s))
            .map_err(|e| super::Error::Journal(format!("dial unixgram {SOCKET}: {e}")))?;
        Ok(Self::with_socket(socket))
    }

    /// A journal writing to `socket` (already connected).
    pub fn with_socket(socket: UnixDatagram) -> Self {
        let identifier = std::env::args_os()
            .next()
            .map(std::path::PathBuf::from)
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "cairn".to_string());
        Journal { socket, identifier }
    }

    /// Sends one record; on failure writes `json` to stderr instead.
    pub fn send(&self, record: &super::format::Record, json: &str) {
        let datagram = encode(record, json.trim_end_matches('\n'), &self.identifier);
        if self.socket.send(&datagram).is_err() {
            let _ = std::io::stderr().lock().write_all(json.as_bytes());
        }
    }
}

/// journald's native datagram: `KEY=value\n` per field, MESSAGE in the
/// length-prefixed form that allows any bytes.
pub fn encode(record: &super::format::Record, line: &str, identifier: &str) -> Vec<u8> {
    // syslog priorities, as etcd maps zap's levels.
    let priority = match record.level {
        "debug" => 7,
        "info" => 6,
        "warn" => 4,
        "error" => 3,
        _ => 2,
    };
    let package = record
        .caller
        .as_deref()
        .and_then(|c| c.rsplit_once('/').map(|(dir, _)| dir))
        .unwrap_or(".");
    let mut out = Vec::with_capacity(line.len() + 96);
    out.extend_from_slice(b"MESSAGE\n");
    out.extend_from_slice(&(line.len() as u64).to_le_bytes());
    out.extend_from_slice(line.as_bytes());
    out.push(b'\n');
    for (key, value) in [
        ("PRIORITY", priority.to_string().as_str()),
        ("PACKAGE", package),
        ("SYSLOG_IDENTIFIER", identifier),
    ] {
        // Newlines would end the field early; none of these has one.
        out.extend_from_slice(format!("{key}={}\n", value.replace('\n', " ")).as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn records_reach_journald_in_its_native_form() {
        let (ours, journald) = UnixDatagram::pair().unwrap();
        let journal = Journal::with_socket(ours);
        let record = super::super::format::Record {
            level: "warn",
            ts: "2021-09-21T10:28:24.123Z".into(),
            logger: None,
            caller: Some("raft/log.rs:42".into()),
            msg: "hello".into(),
            fields: vec![],
        };
        let json = record.json();
        journal.send(&record, &json);
        let mut buf = vec![0u8; 4096];
        let n = journald.recv(&mut buf).unwrap();
        let got = &buf[..n];
        let line = json.trim_end();
        let mut want = b"MESSAGE\n".to_vec();
        want.extend_from_slice(&(line.len() as u64).to_le_bytes());
        want.extend_from_slice(line.as_bytes());
        want.extend_from_slice(b"\nPRIORITY=4\nPACKAGE=raft\nSYSLOG_IDENTIFIER=");
        assert!(got.starts_with(&want), "{}", String::from_utf8_lossy(got));
        assert!(got.ends_with(b"\n"));
    }
}
