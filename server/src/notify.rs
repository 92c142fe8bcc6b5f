//! systemd's readiness protocol (`sd_notify`), as etcd speaks it: a unit of
//! `Type=notify` learns that the member serves (`READY=1`) and that it is
//! stopping (`STOPPING=1`) from datagrams sent to `$NOTIFY_SOCKET`.

use std::io;
use std::os::unix::net::UnixDatagram;

/// Sends `state` (e.g. `READY=1`) to the service manager, if there is one
/// (`$NOTIFY_SOCKET` set). `Ok(false)` when there is none. A socket name
/// starting with `@` is in the abstract namespace, as systemd documents.
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let socket = UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        socket.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        socket.send_to(state.as_bytes(), &path)?;
    }
    Ok(true)
}
