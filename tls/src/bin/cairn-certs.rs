//! `cairn-certs`: a CA and the certificates of a TLS test or dev cluster.
//!
//! ```text
//! cairn-certs DIR [NAME=CN[,host...]]...
//! ```
//!
//! Writes `DIR/ca.pem` (the CA's key is never written: nothing can be
//! issued later by accident), then for each `NAME=CN,hosts`
//! `DIR/NAME.pem` and `DIR/NAME-key.pem`, valid for the hosts (DNS names or
//! IP addresses) as server and client certificates. Example:
//!
//! ```text
//! cairn-certs certs a=a,127.0.0.1,localhost b=b,127.0.0.1 client=root
//! ```

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use cairn_tls::pki::{write, write_issued, Ca, Leaf};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next().map(PathBuf::from) else {
        bail!("usage: cairn-certs DIR [NAME=CN[,host...]]...");
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let ca = Ca::new("cairn-ca")?;
    write(&dir.join("ca.pem"), ca.cert_pem(), false)?;
    for (serial, spec) in (2u64..).zip(args) {
        let Some((name, rest)) = spec.split_once('=') else {
            bail!("{spec:?}: expected NAME=CN[,host...]");
        };
        let mut parts = rest.split(',');
        let cn = parts.next().unwrap_or_default();
        let hosts: Vec<&str> = parts.filter(|h| !h.is_empty()).collect();
        let issued = ca.issue(&Leaf::new(cn, &hosts, serial))?;
        let (cert, _) = write_issued(&dir, name, &issued)?;
        println!("{}", cert.display());
    }
    Ok(())
}
