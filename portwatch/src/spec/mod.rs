//! The port spec: a vendor's port table as a checked file. Owns the model, the TOML format, the
//! linter and the importer of vendor documents; it never looks at traffic (that is classify).
pub mod import;
pub mod lint;
pub mod model;
pub mod parse;

pub use model::{
    DirectionSpec, Document, Entry, Flags, Location, Origin, Peer, PortMatch, PortRange, PortSet,
    PortVariant, Ports, Spec, TransportSpec, ZONE_ALL_NODES, ZONE_ANY, ZoneDecl,
};
pub use parse::SpecError;
