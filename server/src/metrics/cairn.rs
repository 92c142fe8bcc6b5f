//! Cairn's own metrics, under `cairn_` (etcd has no equivalent): the
//! member's zone, and encryption at rest (the active data key, how many
//! keys are held, the re-sealing after a rotation).

use prometheus::{IntCounter, IntGauge, IntGaugeVec, Registry};

use super::{int_counter, int_gauge, int_gauge_vec};
use crate::member::Apis;

/// `cairn_*`.
#[derive(Debug)]
pub struct CairnMetrics {
    zone: IntGaugeVec,
    active_key: IntGauge,
    data_keys: IntGauge,
    /// cairn_encryption_resealed_records_total: records the background
    /// re-sealing moved to the active key.
    pub resealed: IntCounter,
}

impl CairnMetrics {
    pub(super) fn new(r: &Registry) -> Result<Self, prometheus::Error> {
        Ok(Self {
            zone: int_gauge_vec(
                r,
                "cairn_server_zone",
                "The zone of this member (--zone). 1 for the 'zone' label with the current zone.",
                &["zone"],
            )?,
            active_key: int_gauge(
                r,
                "cairn_encryption_active_key_id",
                "The id of the data key new records are sealed with (0 when nothing is sealed).",
            )?,
            data_keys: int_gauge(
                r,
                "cairn_encryption_data_keys",
                "The number of data keys held: more than 1 while records sealed with an older key are re-sealed.",
            )?,
            resealed: int_counter(
                r,
                "cairn_encryption_resealed_records_total",
                "The total number of records re-sealed with the active data key after a rotation.",
            )?,
        })
    }

    /// Sets the zone label (once, at start).
    pub fn set_zone(&self, zone: &str) {
        self.zone.reset();
        self.zone.with_label_values(&[zone]).set(1);
    }

    /// The current key state.
    pub(super) fn refresh(&self, apis: &Apis) {
        match apis.proposer().machine().keys() {
            Some(keys) => {
                self.active_key.set(i64::from(keys.active_key_id()));
                self.data_keys
                    .set(i64::try_from(keys.key_ids().len()).unwrap_or(i64::MAX));
            }
            None => {
                self.active_key.set(0);
                self.data_keys.set(0);
            }
        }
    }
}
