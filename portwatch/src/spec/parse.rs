//! Reads a spec file (TOML) into [`Spec`], checking every value and naming file:line:column of
//! anything wrong. It owns the file format and its errors; it judges nothing about the content
//! beyond validity (that is `lint.rs`).
use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::model::{
    Document, Entry, Flags, Location, Origin, Peer, PortSet, Ports, Spec, ZoneDecl, is_zone_name,
    parse_set,
};

/// Why a spec file could not be read. Every variant but `Read` names file:line:column.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read spec file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{at}: not a valid spec file: {message}\n  hint: {hint}")]
    Syntax {
        at: Location,
        message: String,
        hint: &'static str,
    },
    #[error("{at}: {field}: expected {expected}, found {found}\n  hint: {hint}")]
    Invalid {
        at: Location,
        field: String,
        expected: &'static str,
        found: String,
        hint: &'static str,
    },
    #[error(
        "{at}: entry id {id:?} is already used by the entry at {first}\n  hint: give every entry its own id (ids name findings and metrics)"
    )]
    DuplicateId {
        at: Location,
        id: String,
        first: Location,
    },
}

impl SpecError {
    /// Where in the file the problem is (none for a read failure).
    pub fn location(&self) -> Option<&Location> {
        match self {
            Self::Read { .. } => None,
            Self::Syntax { at, .. } | Self::Invalid { at, .. } | Self::DuplicateId { at, .. } => {
                Some(at)
            }
        }
    }
}

/// Maps byte offsets of a text to 1-based line and column (in characters).
#[derive(Debug)]
pub(crate) struct LineIndex<'a> {
    text: &'a str,
    file: &'a Path,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub(crate) fn new(text: &'a str, file: &'a Path) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self { text, file, starts }
    }

    /// The location of byte `offset` (clamped to the text).
    pub(crate) fn at(&self, offset: usize) -> Location {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.starts.partition_point(|&s| s <= offset).max(1);
        let start = self.starts[line - 1];
        let column = self.text[start..offset].chars().count() + 1;
        Location {
            file: self.file.to_path_buf(),
            line: u32::try_from(line).unwrap_or(u32::MAX),
            column: u32::try_from(column).unwrap_or(u32::MAX),
        }
    }

    /// The source text of a span (empty if out of bounds).
    pub(crate) fn slice(&self, span: Range<usize>) -> &'a str {
        self.text.get(span).unwrap_or("")
    }

    /// A location inside a string value: where `piece` occurs in the value's source, else the
    /// value's start.
    pub(crate) fn within(&self, span: Range<usize>, piece: &str) -> Location {
        let src = self.slice(span.clone());
        let piece = piece.trim();
        match (piece.is_empty(), src.find(piece)) {
            (false, Some(i)) => self.at(span.start + i),
            _ => self.at(span.start),
        }
    }
}

/// A hint for a TOML or shape error, from its message.
pub(crate) fn toml_hint(message: &str) -> &'static str {
    if message.contains("unknown field") {
        "check the key's spelling; docs/spec.md lists every key"
    } else if message.contains("missing field") {
        "add the missing key; docs/spec.md lists the required keys"
    } else if message.contains("invalid type") {
        "the value has the wrong type; docs/spec.md gives each key's type"
    } else {
        "check the TOML syntax near this position (quotes, brackets, commas, `=`)"
    }
}

/// Converts a toml error into a located syntax error.
pub(crate) fn toml_error(err: &toml::de::Error, idx: &LineIndex<'_>) -> (Location, String) {
    let at = idx.at(err.span().map_or(0, |s| s.start));
    (at, err.message().trim().to_string())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    spec: RawHeader,
    #[serde(default)]
    zones: HashMap<Spanned<String>, Spanned<String>>,
    #[serde(default, rename = "entry")]
    entries: Vec<Spanned<RawEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeader {
    name: Spanned<String>,
    #[serde(default)]
    vendor: String,
    #[serde(default)]
    product: String,
    #[serde(default)]
    document: String,
    url: Option<String>,
    copy: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    id: Spanned<String>,
    service: Spanned<String>,
    ports: Spanned<toml::Value>,
    #[serde(default)]
    alternatives: Vec<Spanned<String>>,
    transport: Spanned<String>,
    app: Option<Spanned<String>>,
    direction: Spanned<String>,
    #[serde(default)]
    sources: Vec<Spanned<String>>,
    #[serde(default)]
    destinations: Vec<Spanned<String>>,
    #[serde(default)]
    processes: Vec<Spanned<String>>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    flags: Vec<Spanned<String>>,
    #[serde(default)]
    origin: RawOrigin,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOrigin {
    table: Option<String>,
    line: Option<Spanned<i64>>,
    line_end: Option<Spanned<i64>>,
    note: Option<String>,
    document_ports: Option<Spanned<toml::Value>>,
    document_processes: Option<Vec<String>>,
}

struct Ctx<'a> {
    idx: LineIndex<'a>,
}

impl Ctx<'_> {
    fn invalid(
        &self,
        at: Location,
        field: &str,
        expected: &'static str,
        found: impl Into<String>,
        hint: &'static str,
    ) -> SpecError {
        SpecError::Invalid {
            at,
            field: field.to_string(),
            expected,
            found: found.into(),
            hint,
        }
    }

    fn ports(&self, v: &Spanned<toml::Value>, field: &str) -> Result<Ports, SpecError> {
        const EXPECTED: &str = "a port (443), a string (\"445, 137-139\", \"25 or 587\", \"default: 5672; tls: 5671\", \"none\") or an array of ports and ranges";
        const HINT: &str = "ports are 1-65535: 443, \"445, 137-139\", \"25 or 587\", \"default: 5672; tls: 5671\", or \"none\" for ICMP and N/A rows (docs/spec.md)";
        let span = v.span();
        let from_int = |i: i64, span: Range<usize>| -> Result<PortSet, SpecError> {
            u16::try_from(i)
                .ok()
                .and_then(super::model::PortRange::single)
                .and_then(|r| PortSet::new(vec![r]))
                .ok_or_else(|| {
                    self.invalid(
                        self.idx.at(span.start),
                        field,
                        "a port number from 1 to 65535",
                        i.to_string(),
                        HINT,
                    )
                })
        };
        let from_str = |s: &str, span: Range<usize>, whole: bool| -> Result<Ports, SpecError> {
            let parsed = if whole {
                s.parse::<Ports>()
            } else {
                parse_set(s).map(Ports::All)
            };
            parsed.map_err(|e| {
                self.invalid(
                    self.idx.within(span, &e.found),
                    field,
                    e.expected,
                    format!("{:?}", e.found),
                    HINT,
                )
            })
        };
        match v.get_ref() {
            toml::Value::Integer(i) => from_int(*i, span).map(Ports::All),
            toml::Value::String(s) => from_str(s, span, true),
            toml::Value::Array(items) => {
                // Items carry no spans of their own; locate them by their text.
                let mut ranges = Vec::new();
                for item in items {
                    match item {
                        toml::Value::Integer(i) => {
                            ranges.extend_from_slice(from_int(*i, span.clone())?.ranges())
                        }
                        toml::Value::String(s) => {
                            if let Ports::All(set) = from_str(s, span.clone(), false)? {
                                ranges.extend_from_slice(set.ranges());
                            }
                        }
                        other => {
                            return Err(self.invalid(
                                self.idx.at(span.start),
                                field,
                                "array items that are port numbers or strings like \"9000-9010\"",
                                format!("{} {other}", other.type_str()),
                                HINT,
                            ));
                        }
                    }
                }
                PortSet::new(ranges).map(Ports::All).ok_or_else(|| {
                    self.invalid(
                        self.idx.at(span.start),
                        field,
                        EXPECTED,
                        "an empty array",
                        HINT,
                    )
                })
            }
            other => Err(self.invalid(
                self.idx.at(span.start),
                field,
                EXPECTED,
                format!("{} {other}", other.type_str()),
                HINT,
            )),
        }
    }

    /// `alternatives`: two or more distinct labels of the entry's labelled variants, returned
    /// as the variants write them.
    fn alternatives(
        &self,
        ports: &Ports,
        raw: &[Spanned<String>],
    ) -> Result<Vec<String>, SpecError> {
        const HINT: &str = "alternatives = [\"Default\", \"TLS\"] says a site uses one of those variants and the others alongside";
        if raw.is_empty() {
            return Ok(Vec::new());
        }
        let Ports::Variants(variants) = ports else {
            return Err(self.invalid(
                self.idx.at(raw[0].span().start),
                "alternatives",
                "labels of labelled variants (ports = \"default: 5672; tls: 5671\")",
                format!("alternatives for ports = \"{ports}\", which has no labels"),
                HINT,
            ));
        };
        let mut out: Vec<String> = Vec::with_capacity(raw.len());
        for a in raw {
            let want = a.get_ref().trim();
            let Some(v) = variants.iter().find(|v| v.label.eq_ignore_ascii_case(want)) else {
                let labels: Vec<&str> = variants.iter().map(|v| v.label.as_str()).collect();
                return Err(self.invalid(
                    self.idx.at(a.span().start),
                    "alternatives",
                    "a label of this entry's variants",
                    format!("{want:?} (the labels are {})", labels.join(", ")),
                    HINT,
                ));
            };
            if out.contains(&v.label) {
                return Err(self.invalid(
                    self.idx.at(a.span().start),
                    "alternatives",
                    "each label once",
                    format!("{want:?} a second time"),
                    HINT,
                ));
            }
            out.push(v.label.clone());
        }
        if out.len() < 2 {
            return Err(self.invalid(
                self.idx.at(raw[0].span().start),
                "alternatives",
                "two or more labels",
                format!("only {:?}", out[0]),
                HINT,
            ));
        }
        Ok(out)
    }

    fn peers(&self, field: &str, raw: &[Spanned<String>]) -> Result<Vec<Peer>, SpecError> {
        raw.iter()
            .map(|s| {
                s.get_ref().parse::<Peer>().map_err(|e| {
                    self.invalid(
                        self.idx.at(s.span().start),
                        field,
                        "a zone name (all-nodes, admin), a CIDR (10.0.0.0/8), an address or a host name (listener.logz.io)",
                        format!("{:?}", e.found),
                        "zone names are lowercase letters, digits, '-' and '_'; prefix with host: or zone: to force the kind",
                    )
                })
            })
            .collect()
    }

    fn line_no(&self, field: &str, v: &Option<Spanned<i64>>) -> Result<Option<u32>, SpecError> {
        let Some(v) = v else { return Ok(None) };
        match u32::try_from(*v.get_ref()) {
            Ok(n) if n > 0 => Ok(Some(n)),
            _ => Err(self.invalid(
                self.idx.at(v.span().start),
                field,
                "a line number from 1",
                v.get_ref().to_string(),
                "origin lines count from 1 in the shipped copy of the vendor document",
            )),
        }
    }

    fn entry(&self, raw: Spanned<RawEntry>) -> Result<Entry, SpecError> {
        let location = self.idx.at(raw.span().start);
        let raw = raw.into_inner();
        let id = raw.id.get_ref().trim();
        if !is_zone_name(id) {
            return Err(self.invalid(
                self.idx.at(raw.id.span().start),
                "id",
                "an id of lowercase letters, digits, '-' and '_' starting with a letter",
                format!("{:?}", raw.id.get_ref()),
                "ids appear in findings and metric labels; e.g. id = \"oxygen-licensing\"",
            ));
        }
        let service = raw.service.get_ref().trim();
        if service.is_empty() {
            return Err(self.invalid(
                self.idx.at(raw.service.span().start),
                "service",
                "the vendor's service name",
                "an empty string",
                "copy the service name from the vendor table",
            ));
        }
        let transport = {
            let t = raw.transport.get_ref();
            if t.trim().eq_ignore_ascii_case("none") {
                None
            } else {
                Some(t.parse().map_err(|()| {
                    self.invalid(
                        self.idx.at(raw.transport.span().start),
                        "transport",
                        "one of tcp, udp, sctp, icmp, icmpv6, any, none",
                        format!("{t:?}"),
                        "application protocols (HTTP, RPC, SMB...) go in `app`; their transport is usually tcp",
                    )
                })?)
            }
        };
        let direction = {
            let d = raw.direction.get_ref();
            if d.trim().eq_ignore_ascii_case("none") {
                None
            } else {
                Some(d.parse().map_err(|()| {
                    self.invalid(
                        self.idx.at(raw.direction.span().start),
                        "direction",
                        "one of inbound, outbound, bidirectional, none",
                        format!("{d:?}"),
                        "direction is relative to the node: inbound means the node listens",
                    )
                })?)
            }
        };
        let mut flags = Flags::default();
        for f in &raw.flags {
            match f.get_ref().as_str() {
                "install-only" => flags.install_only = true,
                "dynamic-range" => flags.dynamic_range = true,
                "optional" => flags.optional = true,
                other => {
                    return Err(self.invalid(
                        self.idx.at(f.span().start),
                        "flags",
                        "install-only, dynamic-range or optional",
                        format!("{other:?}"),
                        "flags = [\"install-only\"] marks a port needed only to install or upgrade",
                    ));
                }
            }
        }
        let app = raw
            .app
            .map(|a| a.into_inner().trim().to_string())
            .filter(|a| !a.is_empty());
        let origin = Origin {
            table: raw.origin.table,
            line: self.line_no("origin.line", &raw.origin.line)?,
            line_end: self.line_no("origin.line_end", &raw.origin.line_end)?,
            note: raw.origin.note.filter(|n| !n.trim().is_empty()),
            document_ports: raw
                .origin
                .document_ports
                .as_ref()
                .map(|v| self.ports(v, "origin.document_ports"))
                .transpose()?,
            document_processes: raw.origin.document_processes,
        };
        let ports = self.ports(&raw.ports, "ports")?;
        let alternatives = self.alternatives(&ports, &raw.alternatives)?;
        Ok(Entry {
            id: id.to_string(),
            service: service.to_string(),
            ports,
            alternatives,
            transport,
            app,
            direction,
            sources: self.peers("sources", &raw.sources)?,
            destinations: self.peers("destinations", &raw.destinations)?,
            processes: raw
                .processes
                .into_iter()
                .map(|p| p.into_inner().trim().to_string())
                .filter(|p| !p.is_empty())
                .collect(),
            description: raw.description.trim().to_string(),
            flags,
            origin,
            location,
        })
    }
}

impl Spec {
    /// Reads and parses a spec file.
    pub fn load(path: impl AsRef<Path>) -> Result<Spec, SpecError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses spec text; `path` is used in locations and kept in [`Spec::path`].
    pub fn parse(text: &str, path: impl AsRef<Path>) -> Result<Spec, SpecError> {
        let path = path.as_ref();
        let ctx = Ctx {
            idx: LineIndex::new(text, path),
        };
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let (at, message) = toml_error(&e, &ctx.idx);
            SpecError::Syntax {
                hint: toml_hint(&message),
                at,
                message,
            }
        })?;
        let name = raw.spec.name.get_ref().trim();
        if name.is_empty() {
            return Err(ctx.invalid(
                ctx.idx.at(raw.spec.name.span().start),
                "spec.name",
                "a short name for the spec",
                "an empty string",
                "e.g. name = \"sisense-multinode\"",
            ));
        }
        let mut zones = Vec::new();
        for (k, v) in raw.zones {
            if !is_zone_name(k.get_ref()) {
                return Err(ctx.invalid(
                    ctx.idx.at(k.span().start),
                    "zones",
                    "a zone name of lowercase letters, digits, '-' and '_' starting with a letter",
                    format!("{:?}", k.get_ref()),
                    "e.g. vendor-support = \"ThoughtSpot Support\"",
                ));
            }
            zones.push(ZoneDecl {
                location: ctx.idx.at(k.span().start),
                name: k.into_inner(),
                description: v.into_inner(),
            });
        }
        zones.sort_by(|a, b| {
            (a.location.line, a.location.column).cmp(&(b.location.line, b.location.column))
        });
        let mut entries: Vec<Entry> = Vec::with_capacity(raw.entries.len());
        let mut seen: HashMap<String, usize> = HashMap::new();
        for raw_entry in raw.entries {
            let id_at = ctx.idx.at(raw_entry.get_ref().id.span().start);
            let entry = ctx.entry(raw_entry)?;
            if let Some(&first) = seen.get(&entry.id) {
                return Err(SpecError::DuplicateId {
                    at: id_at,
                    id: entry.id,
                    first: entries[first].location.clone(),
                });
            }
            seen.insert(entry.id.clone(), entries.len());
            entries.push(entry);
        }
        Ok(Spec {
            name: name.to_string(),
            document: Document {
                vendor: raw.spec.vendor,
                product: raw.spec.product,
                title: raw.spec.document,
                url: raw.spec.url,
                copy: raw.spec.copy,
            },
            zones,
            path: path.to_path_buf(),
            entries,
        })
    }

    /// The entry with this id.
    pub fn entry(&self, id: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.id == id)
    }

    /// Every zone name the entries use, sorted, without duplicates.
    pub fn zones_used(&self) -> Vec<&str> {
        let mut z: Vec<&str> = self.entries.iter().flat_map(Entry::zones).collect();
        z.sort_unstable();
        z.dedup();
        z
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::model::{DirectionSpec, TransportSpec};

    const GOOD: &str = r#"
[spec]
name = "demo"
vendor = "Acme"

[zones]
admin = "Administrators IP addresses"
all-nodes = "All nodes"

[[entry]]
id = "ssh"
service = "SSH"
ports = 22
transport = "tcp"
app = "SSH"
direction = "inbound"
sources = ["admin", "10.0.0.0/8"]
destinations = ["all-nodes"]
processes = ["sshd"]
description = "Secure shell"
flags = ["optional"]
origin = { table = "Ops", line = 7, note = "kept" }

[[entry]]
id = "icmp"
service = "health"
ports = "none"
transport = "ICMPv4"
direction = "bidirectional"

[[entry]]
id = "collector"
service = "Collector"
ports = "n/a"
transport = "none"
direction = "none"
"#;

    fn err(text: &str) -> SpecError {
        Spec::parse(text, "t.toml").expect_err("should not parse")
    }

    fn at(e: &SpecError) -> (u32, u32) {
        let l = e.location().expect("located");
        (l.line, l.column)
    }

    #[test]
    fn parses_a_complete_spec_with_locations() {
        let s = Spec::parse(GOOD, "demo.toml").unwrap();
        assert_eq!(s.name, "demo");
        assert_eq!(s.entries.len(), 3);
        let e = &s.entries[0];
        assert_eq!(e.location.line, 10, "entry starts at its [[entry]] header");
        assert_eq!(e.transport, Some(TransportSpec::Tcp));
        assert_eq!(e.direction, Some(DirectionSpec::Inbound));
        assert_eq!(e.sources.len(), 2);
        assert!(e.flags.optional && !e.flags.install_only);
        assert_eq!(e.origin.line, Some(7));
        assert_eq!(s.entries[1].transport, Some(TransportSpec::Icmp));
        assert!(s.entries[1].is_network());
        assert!(!s.entries[2].is_network());
        assert_eq!(
            s.zones.iter().map(|z| z.name.as_str()).collect::<Vec<_>>(),
            ["admin", "all-nodes"]
        );
        assert_eq!(s.zones_used(), ["admin", "all-nodes"]);
        assert_eq!(s.entry("ssh").unwrap().processes, ["sshd"]);
    }

    #[test]
    fn bad_port_is_located_inside_the_string() {
        let text = GOOD.replace("ports = 22", "ports = \"22, 7o\"");
        let e = err(&text);
        assert_eq!(at(&e), (13, 14), "{e}");
        let msg = e.to_string();
        assert!(
            msg.starts_with("t.toml:13:14: ports: expected a port number"),
            "{msg}"
        );
        assert!(
            msg.contains("found \"7o\"") && msg.contains("hint:"),
            "{msg}"
        );
    }

    #[test]
    fn out_of_range_and_wrong_type_ports() {
        let e = err(&GOOD.replace("ports = 22", "ports = 70000"));
        assert!(e.to_string().contains("found 70000"), "{e}");
        let e = err(&GOOD.replace("ports = 22", "ports = 2.5"));
        assert!(e.to_string().contains("found float 2.5"), "{e}");
        let e = err(&GOOD.replace("ports = 22", "ports = []"));
        assert!(e.to_string().contains("found an empty array"), "{e}");
    }

    #[test]
    fn unknown_key_and_missing_key_are_located() {
        let e = err(&GOOD.replace("app = \"SSH\"", "aap = \"SSH\""));
        assert_eq!(at(&e).0, 15, "{e}");
        assert!(e.to_string().contains("unknown field `aap`"), "{e}");
        let e = err(&GOOD.replace("service = \"SSH\"\n", ""));
        assert!(e.to_string().contains("missing field `service`"), "{e}");
        assert!(matches!(e, SpecError::Syntax { .. }));
    }

    #[test]
    fn bad_enums_and_peers_name_the_choices() {
        let e = err(&GOOD.replace("transport = \"tcp\"", "transport = \"HTTP\""));
        assert_eq!(at(&e), (14, 13));
        assert!(e.to_string().contains("one of tcp, udp"), "{e}");
        let e = err(&GOOD.replace("direction = \"inbound\"", "direction = \"sideways\""));
        assert!(
            e.to_string().contains("direction: expected one of inbound"),
            "{e}"
        );
        let e = err(&GOOD.replace("\"admin\", \"10.0.0.0/8\"", "\"admin\", \"All Users\""));
        assert_eq!(at(&e), (17, 21), "{e}");
        let e = err(&GOOD.replace("[\"optional\"]", "[\"sometimes\"]"));
        assert!(
            e.to_string().contains("flags: expected install-only"),
            "{e}"
        );
    }

    #[test]
    fn alternatives_name_labels_of_the_variants() {
        let entry = |ports: &str, alts: &str| {
            format!(
                "[spec]\nname = \"t\"\nvendor = \"v\"\n\n[[entry]]\nid = \"broker\"\nservice = \"Broker\"\nports = \"{ports}\"\nalternatives = {alts}\ntransport = \"tcp\"\ndirection = \"inbound\"\n"
            )
        };
        let variants = "Default: 5672; TLS: 5671; Dist: 25672";
        let s = Spec::parse(&entry(variants, r#"["default", "TLS"]"#), "t.toml").unwrap();
        // Stored as the variants write them.
        assert_eq!(s.entry("broker").unwrap().alternatives, ["Default", "TLS"]);
        for (ports, alts, says) in [
            (
                variants,
                r#"["Default", "Plain"]"#,
                "the labels are Default, TLS, Dist",
            ),
            (variants, r#"["Default"]"#, "two or more labels"),
            (variants, r#"["TLS", "tls"]"#, "each label once"),
            ("25 or 587", r#"["a", "b"]"#, "has no labels"),
        ] {
            let e = err(&entry(ports, alts));
            let msg = e.to_string();
            assert!(msg.contains("alternatives") && msg.contains(says), "{msg}");
            assert_eq!(at(&e).0, 9, "{msg}");
        }
    }

    #[test]
    fn duplicate_ids_name_both_places() {
        let e = err(&GOOD.replace("id = \"icmp\"", "id = \"ssh\""));
        let SpecError::DuplicateId { at, first, .. } = &e else {
            panic!("{e}")
        };
        assert_eq!((at.line, first.line), (25, 10));
    }

    #[test]
    fn toml_syntax_error_is_located() {
        let e = err("[spec]\nname = \"x\"\n[[entry]\n");
        assert_eq!(at(&e).0, 3, "{e}");
        let e = err("");
        assert!(e.to_string().contains("missing field `spec`"), "{e}");
    }
}
