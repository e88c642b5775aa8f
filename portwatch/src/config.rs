//! Resolves the agent's settings from the command line, an optional TOML config file (which
//! mirrors the flags) and defaults, into one [`AgentConfig`]. Command-line flags win.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Which capture backend the agent uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    /// eBPF where it loads, else libpcap (saying why).
    #[default]
    Auto,
    /// TC programs in the kernel (Linux, needs CAP_BPF + CAP_NET_ADMIN).
    Ebpf,
    /// libpcap on live interfaces.
    Pcap,
}

/// The agent's settings, as the config file spells them (every field optional).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConfigFile {
    pub spec: Option<PathBuf>,
    pub inventory: Option<PathBuf>,
    pub backend: Option<BackendChoice>,
    pub iface: Option<Vec<String>>,
    /// Interval, e.g. "60s", "5m".
    pub interval: Option<String>,
    pub out: Option<PathBuf>,
    pub format: Option<Vec<String>>,
    pub flow_capacity: Option<u32>,
    pub flow_cache_slots: Option<u32>,
    pub pin_dir: Option<PathBuf>,
    pub metrics: Option<String>,
    pub history: Option<PathBuf>,
    pub retention: Option<String>,
    pub node: Option<String>,
    pub proc_root: Option<PathBuf>,
}

/// Errors while resolving the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{what}: expected a duration such as 30s, 5m, 1h or 30d, found {found:?}")]
    Duration { what: &'static str, found: String },
    #[error("--metrics: expected an address such as 127.0.0.1:9187, found {found:?}")]
    Metrics { found: String },
    #[error("no spec given: pass --spec FILE or set `spec = \"...\"` in the config file")]
    NoSpec,
}

/// Parses "90s", "5m", "2h", "30d", "500ms" or plain seconds.
pub fn parse_duration(what: &'static str, s: &str) -> Result<Duration, ConfigError> {
    let err = || ConfigError::Duration {
        what,
        found: s.to_owned(),
    };
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| err())?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86_400.0,
        _ => return Err(err()),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(err());
    }
    Ok(Duration::from_secs_f64(secs))
}

impl ConfigFile {
    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }
}

/// Everything `portwatch run` needs, resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentConfig {
    pub spec: PathBuf,
    pub inventory: Option<PathBuf>,
    pub backend: BackendChoice,
    /// None: every interface that is up, except lo.
    pub ifaces: Option<Vec<String>>,
    pub interval: Duration,
    pub out: Option<PathBuf>,
    pub formats: Vec<String>,
    pub flow_capacity: u32,
    /// eBPF only: slots per bank and CPU of the flow cache in front of the flow map; None
    /// when nobody set it (the backend sizes it for the number of possible CPUs).
    pub flow_cache_slots: Option<u32>,
    pub pin_dir: PathBuf,
    pub metrics: Option<SocketAddr>,
    pub history: Option<PathBuf>,
    pub retention: Duration,
    pub node: Option<String>,
    pub proc_root: PathBuf,
    /// Stop after this long (None: until SIGINT/SIGTERM).
    pub duration: Option<Duration>,
}

/// Defaults for settings nobody gave.
pub mod defaults {
    pub const INTERVAL: &str = "60s";
    pub const FLOW_CAPACITY: u32 = 65_536;
    pub const PIN_DIR: &str = "/sys/fs/bpf/portwatch";
    pub const RETENTION: &str = "90d";
    pub const FORMATS: &[&str] = &["json", "text"];
    /// Metrics listen on loopback unless told otherwise.
    pub const METRICS: &str = "127.0.0.1:9187";
}

/// The command-line side of the merge (what the user typed; None when not given).
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub spec: Option<PathBuf>,
    pub inventory: Option<PathBuf>,
    pub backend: Option<BackendChoice>,
    pub iface: Vec<String>,
    pub interval: Option<String>,
    pub out: Option<PathBuf>,
    pub format: Vec<String>,
    pub flow_capacity: Option<u32>,
    pub flow_cache_slots: Option<u32>,
    pub pin_dir: Option<PathBuf>,
    pub metrics: Option<String>,
    pub no_metrics: bool,
    pub history: Option<PathBuf>,
    pub retention: Option<String>,
    pub node: Option<String>,
    pub proc_root: Option<PathBuf>,
    pub duration: Option<String>,
}

impl AgentConfig {
    /// Merges command line over file over defaults.
    pub fn resolve(cli: Overrides, file: ConfigFile) -> Result<Self, ConfigError> {
        let spec = cli.spec.or(file.spec).ok_or(ConfigError::NoSpec)?;
        let interval = cli
            .interval
            .or(file.interval)
            .unwrap_or_else(|| defaults::INTERVAL.into());
        let interval = parse_duration("--interval", &interval)?;
        if interval.is_zero() {
            return Err(ConfigError::Duration {
                what: "--interval",
                found: "0".into(),
            });
        }
        let retention = cli
            .retention
            .or(file.retention)
            .unwrap_or_else(|| defaults::RETENTION.into());
        let metrics = if cli.no_metrics {
            None
        } else {
            let m = cli
                .metrics
                .or(file.metrics)
                .unwrap_or_else(|| defaults::METRICS.into());
            Some(m.parse().map_err(|_| ConfigError::Metrics { found: m })?)
        };
        let ifaces = if cli.iface.is_empty() {
            file.iface
        } else {
            Some(cli.iface)
        };
        let formats = if !cli.format.is_empty() {
            cli.format
        } else {
            file.format
                .unwrap_or_else(|| defaults::FORMATS.iter().map(|s| s.to_string()).collect())
        };
        Ok(Self {
            spec,
            inventory: cli.inventory.or(file.inventory),
            backend: cli.backend.or(file.backend).unwrap_or_default(),
            ifaces,
            interval,
            out: cli.out.or(file.out),
            formats,
            flow_capacity: cli
                .flow_capacity
                .or(file.flow_capacity)
                .unwrap_or(defaults::FLOW_CAPACITY),
            flow_cache_slots: cli.flow_cache_slots.or(file.flow_cache_slots),
            pin_dir: cli
                .pin_dir
                .or(file.pin_dir)
                .unwrap_or_else(|| defaults::PIN_DIR.into()),
            metrics,
            history: cli.history.or(file.history),
            retention: parse_duration("--retention", &retention)?,
            node: cli.node.or(file.node),
            proc_root: cli
                .proc_root
                .or(file.proc_root)
                .unwrap_or_else(|| "/proc".into()),
            duration: cli
                .duration
                .map(|d| parse_duration("--duration", &d))
                .transpose()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_reject_garbage() {
        assert_eq!(parse_duration("x", "90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("x", "5m").unwrap(), Duration::from_secs(300));
        assert_eq!(
            parse_duration("x", "30d").unwrap(),
            Duration::from_secs(30 * 86_400)
        );
        assert_eq!(
            parse_duration("x", "250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(parse_duration("x", "2").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("x", "5 parsecs").is_err());
        assert!(parse_duration("x", "").is_err());
    }

    #[test]
    fn command_line_wins_over_file_and_file_over_defaults() {
        let file: ConfigFile = toml::from_str(
            "spec = \"a.toml\"\ninterval = \"10s\"\niface = [\"eth0\"]\nmetrics = \"127.0.0.1:9187\"\n",
        )
        .unwrap();
        let cli = Overrides {
            spec: Some("b.toml".into()),
            ..Overrides::default()
        };
        let c = AgentConfig::resolve(cli, file).unwrap();
        assert_eq!(c.spec, PathBuf::from("b.toml"));
        assert_eq!(c.interval, Duration::from_secs(10));
        assert_eq!(c.ifaces, Some(vec!["eth0".to_owned()]));
        assert_eq!(c.metrics, Some("127.0.0.1:9187".parse().unwrap()));
        assert_eq!(c.flow_capacity, defaults::FLOW_CAPACITY);
        assert_eq!(
            c.flow_cache_slots, None,
            "unset: the eBPF backend sizes the flow cache for the CPUs"
        );
    }

    #[test]
    fn an_explicit_flow_cache_size_from_the_file_or_the_command_line_is_kept() {
        let file: ConfigFile =
            toml::from_str("spec = \"a.toml\"\nflow-cache-slots = 2048\n").unwrap();
        let c = AgentConfig::resolve(Overrides::default(), file.clone()).unwrap();
        assert_eq!(c.flow_cache_slots, Some(2048));
        let cli = Overrides {
            flow_cache_slots: Some(512),
            ..Overrides::default()
        };
        assert_eq!(
            AgentConfig::resolve(cli, file).unwrap().flow_cache_slots,
            Some(512)
        );
    }

    #[test]
    fn unknown_config_keys_are_rejected_by_name() {
        let err = toml::from_str::<ConfigFile>("intervall = \"10s\"\n").unwrap_err();
        assert!(err.to_string().contains("intervall"), "{err}");
    }

    #[test]
    fn missing_spec_is_a_clear_error() {
        let err = AgentConfig::resolve(Overrides::default(), ConfigFile::default()).unwrap_err();
        assert!(matches!(err, ConfigError::NoSpec));
    }
}
