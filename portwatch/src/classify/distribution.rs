//! Per-service distributions (flow duration, bytes per flow) kept in HDR histograms, with a
//! serialised form that survives a JSON round trip so node reports can be merged exactly.
use base64::Engine as _;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use serde::{Deserialize, Serialize};

/// Significant digits kept (1% precision).
const SIGFIG: u8 = 2;

/// A summary of one distribution plus the histogram itself (base64 of the HdrHistogram V2
/// encoding), so merges are exact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Distribution {
    pub count: u64,
    pub min: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
    /// base64 of the HdrHistogram V2 encoding (empty when `count` is 0).
    pub hdr: String,
}

/// Why a serialised histogram could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum DistributionError {
    #[error("histogram is not valid base64: {0}")]
    Base64(#[from] base64::DecodeError),
    #[error("histogram is not a valid HdrHistogram V2 encoding: {0:?}")]
    Decode(hdrhistogram::serialization::DeserializeError),
    #[error("histograms cannot be added: {0:?}")]
    Add(hdrhistogram::AdditionError),
}

/// A histogram being filled.
#[derive(Clone, Debug)]
pub struct Recorder(Histogram<u64>);

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Self {
        // Auto-resizing with sigfig 2 cannot fail to construct.
        Self(Histogram::new(SIGFIG).expect("sigfig 2 is valid"))
    }

    /// Records one value (values below 1 are recorded as 1, the histogram's floor).
    pub fn record(&mut self, v: u64) {
        // Auto-resizing histograms accept every value up to i64::MAX / 2.
        let _ = self.0.record(v.clamp(1, (i64::MAX / 2) as u64));
    }

    /// Adds another recorder's values.
    pub fn add(&mut self, o: &Recorder) {
        // Both auto-resize with the same precision, so adding cannot fail.
        let _ = self.0.add(&o.0);
    }

    /// Adds a serialised distribution (from another node or interval).
    pub fn merge(&mut self, d: &Distribution) -> Result<(), DistributionError> {
        if d.count == 0 {
            return Ok(());
        }
        let bytes = base64::engine::general_purpose::STANDARD.decode(&d.hdr)?;
        let h: Histogram<u64> = Deserializer::new()
            .deserialize(&mut &bytes[..])
            .map_err(DistributionError::Decode)?;
        self.0.add(&h).map_err(DistributionError::Add)
    }

    /// The summary and serialised form.
    pub fn finish(&self) -> Distribution {
        let h = &self.0;
        if h.is_empty() {
            return Distribution {
                count: 0,
                min: 0,
                p50: 0,
                p90: 0,
                p99: 0,
                max: 0,
                hdr: String::new(),
            };
        }
        let mut buf = Vec::new();
        // Serialising into a Vec cannot fail.
        let _ = V2Serializer::new().serialize(h, &mut buf);
        Distribution {
            count: h.len(),
            min: h.min(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            max: h.max(),
            hdr: base64::engine::general_purpose::STANDARD.encode(buf),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_merge_round_trip() {
        let mut a = Recorder::new();
        for v in 1..=100 {
            a.record(v * 1000);
        }
        let da = a.finish();
        assert_eq!(da.count, 100);
        assert!((49_000..=51_000).contains(&da.p50), "{}", da.p50);
        assert!(da.max >= 100_000 && da.max <= 101_000, "{}", da.max);
        let mut b = Recorder::new();
        b.record(5_000_000);
        let mut m = Recorder::new();
        m.merge(&da).unwrap();
        m.merge(&b.finish()).unwrap();
        m.merge(&Recorder::new().finish()).unwrap();
        let dm = m.finish();
        assert_eq!(dm.count, 101);
        assert!(dm.max >= 5_000_000);
        let bad = Distribution {
            hdr: "!!".into(),
            ..dm
        };
        assert!(matches!(m.merge(&bad), Err(DistributionError::Base64(_))));
    }
}
