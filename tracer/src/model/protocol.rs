//! Protocol classification of a connection (the USM classifier's output).

/// The protocols detected on a connection, one code per layer; 0 means "not classified". The
/// codes are those of the kernel classifier (`tracer_common::classify`, numbered as Datadog's
/// USM numbers each layer) and are passed through unchanged:
/// - api: 1 gRPC;
/// - application: 1 HTTP/1.x, 2 HTTP/2, 3 Kafka, 4 MongoDB, 5 PostgreSQL, 6 AMQP, 7 Redis,
///   8 MySQL;
/// - encryption: 1 TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ProtocolStack {
    /// API layer (e.g. gRPC).
    pub api: u8,
    /// Application layer (e.g. HTTP, Kafka, Postgres).
    pub application: u8,
    /// Encryption layer (e.g. TLS).
    pub encryption: u8,
}

impl ProtocolStack {
    /// Nothing classified.
    pub fn is_unknown(&self) -> bool {
        *self == Self::default()
    }

    /// Two stacks can describe the same traffic if every layer is equal or unknown on one side.
    pub fn is_compatible(&self, other: &Self) -> bool {
        let layer = |a: u8, b: u8| a == 0 || b == 0 || a == b;
        layer(self.api, other.api)
            && layer(self.application, other.application)
            && layer(self.encryption, other.encryption)
    }

    /// Fills this stack's unknown layers from `other`.
    pub fn merge(&mut self, other: &Self) {
        let fill = |a: &mut u8, b: u8| {
            if *a == 0 {
                *a = b;
            }
        };
        fill(&mut self.api, other.api);
        fill(&mut self.application, other.application);
        fill(&mut self.encryption, other.encryption);
    }
}

#[cfg(test)]
mod tests {
    use tracer_common::classify::{PROTO_GRPC, PROTO_HTTP, PROTO_KAFKA, PROTO_TLS};

    use super::*;

    #[test]
    fn stacks_are_compatible_when_each_layer_is_equal_or_unknown() {
        let http = ProtocolStack {
            application: PROTO_HTTP,
            ..Default::default()
        };
        let tls = ProtocolStack {
            encryption: PROTO_TLS,
            ..Default::default()
        };
        let kafka = ProtocolStack {
            application: PROTO_KAFKA,
            ..Default::default()
        };
        assert!(http.is_compatible(&tls));
        assert!(http.is_compatible(&ProtocolStack::default()));
        assert!(!http.is_compatible(&kafka));
    }

    #[test]
    fn merge_fills_only_unknown_layers() {
        let mut a = ProtocolStack {
            application: PROTO_HTTP,
            ..Default::default()
        };
        a.merge(&ProtocolStack {
            api: PROTO_GRPC,
            application: PROTO_KAFKA,
            encryption: PROTO_TLS,
        });
        assert_eq!(
            a,
            ProtocolStack {
                api: PROTO_GRPC,
                application: PROTO_HTTP,
                encryption: PROTO_TLS
            }
        );
    }
}
