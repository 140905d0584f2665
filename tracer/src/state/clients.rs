//! Client identities, the registry with its cap and expiry, and each client's private state.
//!
//! A client is created by [`super::NetworkState::register_client`] or by its first call. From
//! then on it receives the closed connections, DNS and USM batches stored after that moment.
//! Its private state is the per-cookie [`Snapshot`] plus telemetry bookkeeping, behind its own
//! mutex: a merge for one client never blocks another client or the closed-connection path.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU64, Ordering},
};

use rustc_hash::FxHashMap;

use crate::state::{cursor_log::ReaderId, snapshot::Snapshot};

/// Longest accepted client id, in bytes.
pub const MAX_CLIENT_ID_LEN: usize = 256;

pub use crate::error::ClientError;

/// A client's name: any string up to [`MAX_CLIENT_ID_LEN`] bytes (the empty string included).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(Arc<str>);

impl ClientId {
    /// Validates the length and wraps the id.
    pub fn new(id: &str) -> Result<Self, ClientError> {
        if id.len() > MAX_CLIENT_ID_LEN {
            return Err(ClientError::IdTooLong {
                len: id.len(),
                max: MAX_CLIENT_ID_LEN,
            });
        }
        Ok(Self(Arc::from(id)))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A client's private, mutable state (behind [`ClientHandle::state`]).
#[derive(Debug, Default)]
pub(crate) struct ClientState {
    pub(crate) snapshot: Snapshot,
    /// Store-time collisions already reported to this client.
    pub(crate) store_collisions_seen: u64,
    /// Refused clients already reported to this client.
    pub(crate) refused_seen: u64,
    /// Kernel counters already reported to this client.
    pub(crate) kernel_seen: FxHashMap<&'static str, u64>,
}

/// A registered client.
#[derive(Debug)]
pub(crate) struct ClientHandle {
    pub(crate) reader: ReaderId,
    pub(crate) last_call_ns: AtomicU64,
    pub(crate) state: Mutex<ClientState>,
}

impl ClientHandle {
    pub(crate) fn touch(&self, now_ns: u64) {
        self.last_call_ns.fetch_max(now_ns, Ordering::Relaxed);
    }
}

/// id → client, with the cap.
#[derive(Debug)]
pub(crate) struct ClientRegistry {
    clients: FxHashMap<ClientId, Arc<ClientHandle>>,
    next_reader: ReaderId,
    max_clients: usize,
}

impl ClientRegistry {
    pub(crate) fn new(max_clients: usize) -> Self {
        Self {
            clients: FxHashMap::default(),
            next_reader: 0,
            max_clients,
        }
    }

    pub(crate) fn get(&self, id: &ClientId) -> Option<Arc<ClientHandle>> {
        self.clients.get(id).cloned()
    }

    pub(crate) fn len(&self) -> usize {
        self.clients.len()
    }

    /// Creates a client; the caller registers its reader in the shared logs.
    pub(crate) fn create(
        &mut self,
        id: &ClientId,
        now_ns: u64,
        refused_so_far: u64,
        store_collisions_so_far: u64,
    ) -> Result<Arc<ClientHandle>, ClientError> {
        if self.clients.len() >= self.max_clients {
            return Err(ClientError::TooManyClients {
                max: self.max_clients,
            });
        }
        let reader = self.next_reader;
        self.next_reader += 1;
        let state = ClientState {
            refused_seen: refused_so_far,
            store_collisions_seen: store_collisions_so_far,
            ..ClientState::default()
        };
        let handle = Arc::new(ClientHandle {
            reader,
            last_call_ns: AtomicU64::new(now_ns),
            state: Mutex::new(state),
        });
        self.clients.insert(id.clone(), Arc::clone(&handle));
        Ok(handle)
    }

    /// Removes clients idle since `now_ns - expiry_ns` or longer; returns their readers.
    pub(crate) fn remove_expired(&mut self, now_ns: u64, expiry_ns: u64) -> Vec<ReaderId> {
        let mut readers = Vec::new();
        self.clients.retain(|_, handle| {
            let last = handle.last_call_ns.load(Ordering::Relaxed);
            let expired = last.saturating_add(expiry_ns) <= now_ns;
            if expired {
                readers.push(handle.reader);
            }
            !expired
        });
        readers
    }

    pub(crate) fn handles(&self) -> impl Iterator<Item = &Arc<ClientHandle>> {
        self.clients.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_id_longer_than_limit_is_refused_and_empty_is_accepted() {
        assert!(ClientId::new("").is_ok());
        assert!(ClientId::new(&"x".repeat(MAX_CLIENT_ID_LEN)).is_ok());
        assert_eq!(
            ClientId::new(&"x".repeat(10_000)),
            Err(ClientError::IdTooLong {
                len: 10_000,
                max: MAX_CLIENT_ID_LEN
            })
        );
    }

    #[test]
    fn registry_refuses_clients_beyond_cap() {
        let mut registry = ClientRegistry::new(1);
        let a = ClientId::new("a").unwrap();
        let b = ClientId::new("b").unwrap();
        registry.create(&a, 0, 0, 0).unwrap();
        assert_eq!(
            registry.create(&b, 0, 0, 0).unwrap_err(),
            ClientError::TooManyClients { max: 1 }
        );
    }

    #[test]
    fn client_idle_for_expiry_is_removed_and_recent_one_kept() {
        let mut registry = ClientRegistry::new(4);
        let old = registry
            .create(&ClientId::new("old").unwrap(), 0, 0, 0)
            .unwrap();
        registry
            .create(&ClientId::new("new").unwrap(), 50, 0, 0)
            .unwrap();
        assert_eq!(registry.remove_expired(100, 100), vec![old.reader]);
        assert_eq!(registry.len(), 1);
    }
}
