//! Sealing a raft snapshot for its trip between two members.
//!
//! A snapshot carries the whole state machine, so it never travels in plain
//! text: before streaming one, the sender and the receiver agree on a key
//! for that one transfer with an ephemeral X25519 exchange (the
//! `SnapshotKey` peer rpc: each side's public key, then HKDF-SHA256 of the
//! shared secret, salted with the transfer id). The sender seals the whole
//! snapshot with AES-256-GCM under that key (one message per key, so a
//! fixed nonce is safe), chunks the ciphertext, and the receiver opens it
//! once reassembled; a damaged or replayed stream fails to open. The keys
//! live only in memory, for one transfer.
//!
//! This protects snapshots from anyone reading the network. It does not
//! authenticate the peer: that is peer TLS's (`--peer-cert-file`, ...);
//! without it, an active man in the middle is out of its reach, as is
//! every other peer message.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::agreement::{agree_ephemeral, EphemeralPrivateKey, PublicKey, UnparsedPublicKey, X25519};
use ring::hkdf::{Salt, HKDF_SHA256};
use ring::rand::SystemRandom;

/// Errors of the snapshot transfer sealing.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// No randomness, or a malformed public key.
    #[error("snapshot key exchange failed")]
    Exchange,
    /// The sealed snapshot does not open (damaged, truncated, or not for
    /// this transfer).
    #[error("the sealed snapshot fails authentication")]
    Tampered,
}

/// One side's half of a key exchange: its ephemeral key pair.
pub struct Exchange {
    /// Used once, in [`Exchange::finish`].
    private: EphemeralPrivateKey,
    /// Sent to the other side.
    public: PublicKey,
}

impl Exchange {
    /// A fresh ephemeral key pair.
    pub fn start() -> Result<Self, WireError> {
        let rng = SystemRandom::new();
        let private =
            EphemeralPrivateKey::generate(&X25519, &rng).map_err(|_| WireError::Exchange)?;
        let public = private
            .compute_public_key()
            .map_err(|_| WireError::Exchange)?;
        Ok(Self { private, public })
    }

    /// This side's public key, for the other side.
    pub fn public_key(&self) -> Vec<u8> {
        self.public.as_ref().to_vec()
    }

    /// The transfer key, from the other side's public key.
    pub fn finish(self, peer_public: &[u8], transfer: u64) -> Result<TransferKey, WireError> {
        let peer = UnparsedPublicKey::new(&X25519, peer_public);
        let secret = agree_ephemeral(self.private, &peer, |shared| {
            let salt = Salt::new(HKDF_SHA256, &transfer.to_be_bytes());
            let prk = salt.extract(shared);
            let mut key = [0u8; 32];
            prk.expand(&[b"cairn raft snapshot"], &AES_256_GCM)
                .and_then(|okm| okm.fill(&mut key))
                .map(|()| key)
        })
        .map_err(|_| WireError::Exchange)?
        .map_err(|_| WireError::Exchange)?;
        Ok(TransferKey {
            key: secret,
            transfer,
        })
    }
}

/// The key of one snapshot transfer.
pub struct TransferKey {
    /// AES-256 key bytes.
    key: [u8; 32],
    /// The transfer it belongs to (associated data).
    transfer: u64,
}

impl TransferKey {
    fn aead(&self) -> Result<LessSafeKey, WireError> {
        UnboundKey::new(&AES_256_GCM, &self.key)
            .map(LessSafeKey::new)
            .map_err(|_| WireError::Exchange)
    }

    /// Seals the snapshot. One message per key: the zero nonce is never
    /// reused.
    pub fn seal(&self, mut data: Vec<u8>) -> Result<Vec<u8>, WireError> {
        let aad = Aad::from(self.transfer.to_be_bytes());
        self.aead()?
            .seal_in_place_append_tag(Nonce::assume_unique_for_key([0; 12]), aad, &mut data)
            .map_err(|_| WireError::Exchange)?;
        Ok(data)
    }

    /// Opens a sealed snapshot.
    pub fn open(&self, mut sealed: Vec<u8>) -> Result<Vec<u8>, WireError> {
        let aad = Aad::from(self.transfer.to_be_bytes());
        let plain_len = self
            .aead()?
            .open_in_place(Nonce::assume_unique_for_key([0; 12]), aad, &mut sealed)
            .map_err(|_| WireError::Tampered)?
            .len();
        sealed.truncate(plain_len);
        Ok(sealed)
    }
}

impl Drop for TransferKey {
    fn drop(&mut self) {
        self.key = [0; 32];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_agree_and_the_wire_holds_no_plaintext() {
        let sender = Exchange::start().unwrap();
        let receiver = Exchange::start().unwrap();
        let (sp, rp) = (sender.public_key(), receiver.public_key());
        let send_key = sender.finish(&rp, 7).unwrap();
        let recv_key = receiver.finish(&sp, 7).unwrap();
        let data = b"a secret value in a snapshot".repeat(100);
        let sealed = send_key.seal(data.clone()).unwrap();
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(recv_key.open(sealed.clone()).unwrap(), data);
        // A flipped bit, a truncation, or another transfer's key: refused.
        let mut flipped = sealed.clone();
        flipped[3] ^= 1;
        assert!(recv_key.open(flipped).is_err());
        assert!(recv_key.open(sealed[..sealed.len() - 1].to_vec()).is_err());
        let other = Exchange::start().unwrap().finish(&sp, 7).unwrap();
        assert!(other.open(sealed).is_err());
    }
}
