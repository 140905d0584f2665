//! The tracer's configuration: kernel-side sizes and backend, the state pipeline's limits,
//! filters and expiry. Pure data, validated before anything touches the kernel.

use std::path::PathBuf;

use crate::{
    Result,
    enrich::EnrichConfig,
    expiry::ExpiryConfig,
    filter::Filters,
    kernel::{conn_tracer::KernelConfig, packet::CaptureConfig, plan::BackendChoice},
    state::StateConfig,
};

/// Everything [`crate::Tracer::new`] needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Attach backend: [`BackendChoice::Auto`] picks the best the kernel supports.
    pub backend: BackendChoice,
    /// Capacity of the kernel's open-connection map (default 65 536).
    pub max_tracked_connections: u32,
    /// Closed-connection ring buffer size in bytes, a power-of-two number of pages
    /// (default 1 MiB, about 6 500 closes between two wake-ups of the consumer).
    pub ring_buffer_bytes: u32,
    /// Kernel BTF to read struct offsets from (default `/sys/kernel/btf/vmlinux`).
    pub btf_path: Option<PathBuf>,
    /// Limits of the per-client pipeline. Its `ephemeral_ports` is read from the system by
    /// [`Config::default`].
    pub state: StateConfig,
    /// Exclusions and the local-DNS rule.
    pub filters: Filters,
    /// When connections whose close was missed are given up on.
    pub expiry: ExpiryConfig,
    /// Containers, NAT and routes: each on or off, with its sizes and TTLs.
    pub enrich: EnrichConfig,
    /// The packet capture that DNS is snooped from: on or off, ports, snap length, ring size.
    pub capture: CaptureConfig,
}

impl Default for Config {
    fn default() -> Self {
        let kernel = KernelConfig::default();
        let mut state = StateConfig::default();
        if let Ok(ports) = crate::model::EphemeralPortRange::read() {
            state.ephemeral_ports = ports;
        }
        Self {
            backend: kernel.backend,
            max_tracked_connections: kernel.max_tracked_connections,
            ring_buffer_bytes: kernel.ring_buffer_bytes,
            btf_path: kernel.btf_path,
            state,
            filters: Filters::default(),
            expiry: ExpiryConfig::from_system(),
            enrich: EnrichConfig::default(),
            capture: kernel.capture,
        }
    }
}

impl Config {
    /// The kernel-side part.
    pub fn kernel(&self) -> KernelConfig {
        KernelConfig {
            backend: self.backend,
            max_tracked_connections: self.max_tracked_connections,
            ring_buffer_bytes: self.ring_buffer_bytes,
            btf_path: self.btf_path.clone(),
            capture: self.capture.clone(),
        }
    }

    /// Checks every size and limit (zero, absurd, not a power-of-two number of pages).
    pub fn validate(&self) -> Result<()> {
        self.kernel().validate()?;
        self.state.validate()?;
        self.enrich.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    #[test]
    fn default_config_validates() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn bad_ring_size_is_rejected_before_touching_the_kernel() {
        let config = Config {
            ring_buffer_bytes: 12_345,
            ..Config::default()
        };
        assert!(matches!(config.validate(), Err(Error::InvalidConfig(_))));
    }

    #[test]
    fn zero_clients_is_rejected() {
        let mut config = Config::default();
        config.state.max_clients = 0;
        assert!(matches!(config.validate(), Err(Error::InvalidConfig(_))));
    }
}
