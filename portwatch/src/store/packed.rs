//! The packed form of one interval's per-port totals (one BLOB per interval in `port_blobs`):
//! a row per port and interval cost more than everything else the history wrote when a flood
//! keys a total by every remote port. Pure encoding; no SQL.
use crate::flow::{Direction, PortCounts, PortTotal, Side, Transport};

/// Format version, the first byte of every blob.
const VERSION: u8 = 1;

/// Why a blob could not be decoded.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Malformed {
    /// Byte offset where decoding stopped.
    pub at: usize,
    pub what: &'static str,
}

fn key(p: &PortTotal) -> (Transport, u16, Side, Direction) {
    (p.transport, p.port, p.side, p.dir)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Encodes `ports` sorted by key, totals of the same key summed (as the row table's upsert
/// did). Returns the blob and the number of entries in it.
pub(crate) fn encode(ports: &[PortTotal]) -> (Vec<u8>, usize) {
    let mut v: Vec<PortTotal> = ports.to_vec();
    v.sort_by_key(key);
    v.dedup_by(|b, a| {
        if key(a) == key(b) {
            a.counts.add(&b.counts);
            true
        } else {
            false
        }
    });
    let mut out = Vec::with_capacity(1 + v.len() * 12);
    out.push(VERSION);
    for p in &v {
        out.push(p.transport.proto());
        out.extend_from_slice(&p.port.to_le_bytes());
        out.push(u8::from(p.side == Side::Remote) | (u8::from(p.dir == Direction::Out) << 1));
        let c = &p.counts;
        for n in [
            c.packets, c.segments, c.bytes, c.syn, c.synack, c.fin, c.rst,
        ] {
            put_varint(&mut out, n);
        }
    }
    (out, v.len())
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn err(&self, what: &'static str) -> Malformed {
        Malformed { at: self.at, what }
    }
    fn byte(&mut self) -> Result<u8, Malformed> {
        let v = *self.b.get(self.at).ok_or_else(|| self.err("truncated"))?;
        self.at += 1;
        Ok(v)
    }
    fn varint(&mut self) -> Result<u64, Malformed> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(self.err("a counter over 64 bits"));
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.err("a counter over 64 bits"))
    }
}

/// Decodes a blob written by [`encode`], calling `each` for every total in key order.
pub(crate) fn decode(blob: &[u8], mut each: impl FnMut(PortTotal)) -> Result<usize, Malformed> {
    let mut r = Reader { b: blob, at: 0 };
    if r.byte()? != VERSION {
        return Err(Malformed {
            at: 0,
            what: "an unknown format version",
        });
    }
    let mut n = 0;
    while r.at < blob.len() {
        let proto = r.byte()?;
        let port = u16::from_le_bytes([r.byte()?, r.byte()?]);
        let bits = r.byte()?;
        if bits > 3 {
            return Err(r.err("side and direction bits"));
        }
        let mut c = [0u64; 7];
        for x in &mut c {
            *x = r.varint()?;
        }
        each(PortTotal {
            transport: Transport::from_proto(proto),
            port,
            side: if bits & 1 == 0 {
                Side::Local
            } else {
                Side::Remote
            },
            dir: if bits & 2 == 0 {
                Direction::In
            } else {
                Direction::Out
            },
            counts: PortCounts {
                packets: c[0],
                segments: c[1],
                bytes: c[2],
                syn: c[3],
                synack: c[4],
                fin: c[5],
                rst: c[6],
            },
        });
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn total(t: Transport, port: u16, side: Side, dir: Direction, n: u64) -> PortTotal {
        PortTotal {
            transport: t,
            port,
            side,
            dir,
            counts: PortCounts {
                packets: n,
                segments: n.wrapping_add(1),
                bytes: n.wrapping_mul(1500),
                syn: 1,
                synack: 2,
                fin: 3,
                rst: 4,
            },
        }
    }

    fn decoded(blob: &[u8]) -> Result<Vec<PortTotal>, Malformed> {
        let mut v = Vec::new();
        decode(blob, |p| v.push(p))?;
        Ok(v)
    }

    #[test]
    fn round_trips_sorted_with_duplicates_summed_and_extreme_counters() {
        let ports = vec![
            total(
                Transport::Udp,
                65535,
                Side::Remote,
                Direction::Out,
                u64::MAX,
            ),
            total(Transport::Tcp, 443, Side::Local, Direction::In, 7),
            total(Transport::Other(47), 0, Side::Local, Direction::Out, 0),
            total(Transport::Tcp, 443, Side::Local, Direction::In, 5),
            total(
                Transport::Icmpv6,
                34560,
                Side::Remote,
                Direction::In,
                1 << 63,
            ),
        ];
        let (blob, n) = encode(&ports);
        assert_eq!(n, 4);
        let back = decoded(&blob).unwrap();
        let mut expect = ports.clone();
        expect.remove(3);
        expect[1].counts.add(&ports[3].counts);
        expect.sort_by_key(key);
        assert_eq!(back, expect);
        assert_eq!(decoded(&encode(&[]).0).unwrap(), vec![]);
    }

    #[test]
    fn every_truncation_and_a_bad_version_or_bit_are_errors() {
        let (blob, _) = encode(&[
            total(Transport::Tcp, 22, Side::Local, Direction::In, 300),
            total(Transport::Udp, 53, Side::Remote, Direction::Out, 1 << 40),
        ]);
        for len in 1..blob.len() {
            let cut = &blob[..len];
            // A cut between two entries is a shorter valid blob; anywhere else it is an error.
            if let Ok(v) = decoded(cut) {
                assert!(len == 1 || v.len() == 1, "cut at {len}");
            }
        }
        assert!(decoded(&[]).is_err());
        let mut bad = blob.clone();
        bad[0] = 9;
        assert_eq!(decoded(&bad).unwrap_err().what, "an unknown format version");
        let mut bad = blob.clone();
        bad[4] = 4;
        assert_eq!(decoded(&bad).unwrap_err().what, "side and direction bits");
        let mut long = vec![VERSION, 6, 22, 0, 0];
        long.extend([0xff; 10]);
        long.push(0);
        assert!(decoded(&long).is_err());
    }
}
