//! The tracer's configuration: kernel-side sizes and backend, the state pipeline's limits,
//! filters and expiry. Pure data, validated before anything touches the kernel.

use std::path::PathBuf;

use crate::{
    Result,
    enrich::EnrichConfig,
    expiry::ExpiryConfig,
    filter::Filters,
    kernel::{conn_tracer::KernelConfig, packet::CaptureConfig, plan::BackendChoice},
    sources::{dns::DnsConfig, http::HttpConfig, tls::TlsConfig},
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
    /// The packet capture that DNS is snooped from and HTTP parsed in: on or off, ports, snap
    /// length, ring size, the kernel's HTTP parser.
    pub capture: CaptureConfig,
    /// DNS stats and reverse DNS from the captured packets: timeout, caps, query types.
    pub dns: DnsConfig,
    /// HTTP stats from the kernel's finished HTTP/1.x transactions: path bytes, quantization,
    /// replace rules, cap.
    pub http: HttpConfig,
    /// HTTPS: uprobes on the TLS libraries (OpenSSL, GnuTLS) feed the HTTP stats: on or off,
    /// libraries, cap on hooked files, refresh of the file registry.
    pub tls: TlsConfig,
    /// Track the connections that existed before the start (Linux 5.9+): on by default. See
    /// [`KernelConfig::track_existing`].
    pub track_existing: bool,
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
            dns: DnsConfig::default(),
            http: HttpConfig::default(),
            tls: TlsConfig::default(),
            track_existing: kernel.track_existing,
        }
    }
}

impl Config {
    /// The kernel-side part. The kernel's HTTP parser runs only when the HTTP source consumes
    /// what it emits (`http.enabled`) and the capture asks for it (`capture.http`).
    pub fn kernel(&self) -> KernelConfig {
        KernelConfig {
            backend: self.backend,
            max_tracked_connections: self.max_tracked_connections,
            ring_buffer_bytes: self.ring_buffer_bytes,
            btf_path: self.btf_path.clone(),
            capture: CaptureConfig {
                http: self.capture.http && self.http.enabled,
                ..self.capture.clone()
            },
            tls_max_objects: if self.tls.enabled && self.http.enabled {
                self.tls.max_objects
            } else {
                0
            },
            track_existing: self.track_existing,
        }
    }

    /// Checks every size and limit (zero, absurd, not a power-of-two number of pages), and
    /// that the state can hold what the HTTP source hands it in one batch.
    pub fn validate(&self) -> Result<()> {
        self.kernel().validate()?;
        self.state.validate()?;
        self.enrich.validate()?;
        self.dns.validate()?;
        self.http.validate()?;
        self.tls.validate()?;
        // The state refuses a batch heavier than its whole USM limit: with a smaller limit, a
        // busy interval's HTTP stats would reach no client at all.
        if self.http.enabled && self.http.max_stats > self.state.max_usm_stats {
            return Err(crate::Error::InvalidConfig(format!(
                "http.max_stats ({}) must not exceed state.max_usm_stats ({})",
                self.http.max_stats, self.state.max_usm_stats
            )));
        }
        Ok(())
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
    fn http_config_is_validated_and_must_fit_the_state() {
        let mut config = Config::default();
        config.http.path_bytes = tracer_common::http::HTTP_PATH_MAX + 1;
        assert!(matches!(config.validate(), Err(Error::InvalidConfig(_))));
        let mut config = Config::default();
        config.http.replace_rules = vec![crate::sources::http::ReplaceRule {
            pattern: "(".into(),
            replacement: None,
        }];
        assert!(matches!(config.validate(), Err(Error::InvalidConfig(_))));
        let mut config = Config::default();
        config.state.max_usm_stats = config.http.max_stats - 1;
        assert!(matches!(config.validate(), Err(Error::InvalidConfig(_))));
        config.http.enabled = false;
        config.validate().unwrap();
    }

    #[test]
    fn the_kernel_parses_http_only_when_the_source_consumes_it() {
        let mut config = Config::default();
        assert_eq!(config.kernel().capture.to_kernel().http, 1);
        config.http.enabled = false;
        assert_eq!(config.kernel().capture.to_kernel().http, 0);
        config.http.enabled = true;
        config.capture.http = false;
        assert_eq!(config.kernel().capture.to_kernel().http, 0);
    }

    #[test]
    fn zero_clients_is_rejected() {
        let mut config = Config::default();
        config.state.max_clients = 0;
        assert!(matches!(config.validate(), Err(Error::InvalidConfig(_))));
    }
}
