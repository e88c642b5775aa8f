//! The cluster scenario of issue 8: three node namespaces on a bridge plus an admin workstation
//! and an outside client, real Debian daemons on the nodes, real clients, and tcpdump + tshark as
//! the independent oracle. It owns every namespace, process and file it makes (see [`lab::Lab`])
//! and never touches portwatch's own code paths: the agents it runs are separate processes.
pub mod agents;
pub mod checks;
pub mod daemons;
pub mod error;
pub mod lab;
pub mod oracle;
pub mod portwatch;
pub mod scenario;
pub mod traffic;

pub use error::{ClusterError, Result};
pub use lab::{Host, Lab};

/// A command line as a shell would show it (for error messages).
pub fn show(cmd: &std::process::Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `c` to completion and returns its output; a spawn failure or an unsuccessful exit
/// becomes an error naming `command` and carrying what the command printed.
pub fn checked_output(
    c: &mut std::process::Command,
    command: String,
) -> Result<std::process::Output> {
    let out = c.output().map_err(|source| ClusterError::Spawn {
        command: command.clone(),
        source,
    })?;
    if !out.status.success() {
        return Err(ClusterError::Failed {
            command,
            status: out.status.to_string(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        });
    }
    Ok(out)
}
