//! Admission of connections to the key server: two bounded pools and shedding.
//!
//! A connection is *unauthenticated* from `accept()` until its TLS handshake
//! (with the RA-TLS evidence check) completes, then *authenticated*. Each pool
//! has its own bound, and unauthenticated connections also have a bound per
//! source (an IPv4 address, or an IPv6 /64). A new connection is never
//! refused and `accept()` never stops: when its source is at the per-source
//! bound, the source's own oldest handshake is shed; otherwise, when the
//! pool is full, the oldest handshake of all is shed. Honest handshakes take
//! milliseconds, so the oldest ones are, under attack, the attacker's idle or
//! stalled sockets. Authenticated connections are shed oldest-first as well
//! when their pool is full (an honest exchange after the handshake also takes
//! milliseconds).
//!
//! Shedding is a message to the connection's task (a oneshot channel), which
//! drops its socket at once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// Why a connection was told to go away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shed {
    /// Its source had the most allowed handshakes in progress.
    SourceFull,
    /// The handshake pool was full and this was the oldest handshake.
    HandshakesFull,
    /// The authenticated pool was full and this was its oldest connection.
    AuthenticatedFull,
    /// The process ran out of file descriptors and this was the oldest handshake.
    OutOfDescriptors,
}

impl Shed {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Shed::SourceFull => "its source address is at the per-source handshake limit",
            Shed::HandshakesFull => "the handshake pool is full",
            Shed::AuthenticatedFull => "the authenticated connection pool is full",
            Shed::OutOfDescriptors => "the process is out of file descriptors",
        }
    }
}

struct Slot {
    source: IpAddr,
    shed: Option<oneshot::Sender<Shed>>,
}

#[derive(Default)]
struct State {
    unauthenticated: BTreeMap<u64, Slot>,
    authenticated: BTreeMap<u64, Slot>,
    /// Handshakes in progress per source, oldest first.
    per_source: HashMap<IpAddr, BTreeSet<u64>>,
}

/// Bounds of the two pools.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    pub handshakes: usize,
    pub handshakes_per_source: usize,
    pub authenticated: usize,
}

/// The admission table shared by the accept loop and every connection task.
pub(crate) struct ConnTable {
    bounds: Bounds,
    next: AtomicU64,
    state: Mutex<State>,
    /// Connections shed, by reason (same order as [`Shed`]).
    pub(crate) shed_counts: [AtomicU64; 4],
}

/// The grouping key for per-source bounds: IPv4 address, or IPv6 /64 prefix.
pub(crate) fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// A connection's place in the table; leaving it (drop) frees the place.
pub(crate) struct Ticket {
    table: Arc<ConnTable>,
    id: u64,
}

impl ConnTable {
    pub(crate) fn new(bounds: Bounds) -> Arc<Self> {
        Arc::new(Self {
            bounds,
            next: AtomicU64::new(0),
            state: Mutex::new(State::default()),
            shed_counts: Default::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(&self, why: Shed) {
        let i = match why {
            Shed::SourceFull => 0,
            Shed::HandshakesFull => 1,
            Shed::AuthenticatedFull => 2,
            Shed::OutOfDescriptors => 3,
        };
        self.shed_counts[i].fetch_add(1, Ordering::Relaxed);
    }

    fn shed_unauthenticated(&self, st: &mut State, id: u64, why: Shed) {
        if let Some(mut slot) = st.unauthenticated.remove(&id) {
            remove_source(st, slot.source, id);
            if let Some(tx) = slot.shed.take() {
                let _ = tx.send(why);
            }
            self.count(why);
        }
    }

    /// Admits a freshly accepted connection from `peer` as unauthenticated,
    /// shedding another handshake first if a bound would be exceeded.
    pub(crate) fn admit(self: &Arc<Self>, peer: IpAddr) -> (Ticket, oneshot::Receiver<Shed>) {
        let source = source_key(peer);
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let mut st = self.lock();
        let own_oldest = st
            .per_source
            .get(&source)
            .filter(|s| s.len() >= self.bounds.handshakes_per_source)
            .and_then(|s| s.first().copied());
        if let Some(victim) = own_oldest {
            self.shed_unauthenticated(&mut st, victim, Shed::SourceFull);
        } else if st.unauthenticated.len() >= self.bounds.handshakes
            && let Some(victim) = st.unauthenticated.keys().next().copied()
        {
            self.shed_unauthenticated(&mut st, victim, Shed::HandshakesFull);
        }
        st.unauthenticated.insert(id, Slot { source, shed: Some(tx) });
        st.per_source.entry(source).or_default().insert(id);
        drop(st);
        (Ticket { table: self.clone(), id }, rx)
    }

    /// Sheds the oldest handshake (to free a file descriptor). Returns whether one was shed.
    pub(crate) fn shed_oldest_handshake(&self, why: Shed) -> bool {
        let mut st = self.lock();
        match st.unauthenticated.keys().next().copied() {
            Some(victim) => {
                self.shed_unauthenticated(&mut st, victim, why);
                true
            }
            None => false,
        }
    }

    /// (handshakes in progress, authenticated connections).
    pub(crate) fn occupancy(&self) -> (usize, usize) {
        let st = self.lock();
        (st.unauthenticated.len(), st.authenticated.len())
    }
}

fn remove_source(st: &mut State, source: IpAddr, id: u64) {
    if let Some(set) = st.per_source.get_mut(&source) {
        set.remove(&id);
        if set.is_empty() {
            st.per_source.remove(&source);
        }
    }
}

impl Ticket {
    /// Moves the connection into the authenticated pool (its handshake completed),
    /// shedding the oldest authenticated connection if that pool is full.
    pub(crate) fn promote(&self) {
        let t = &self.table;
        let mut st = t.lock();
        let Some(slot) = st.unauthenticated.remove(&self.id) else {
            return; // already shed: the task is about to end
        };
        remove_source(&mut st, slot.source, self.id);
        if st.authenticated.len() >= t.bounds.authenticated
            && let Some(victim) = st.authenticated.keys().next().copied()
            && let Some(mut v) = st.authenticated.remove(&victim)
        {
            if let Some(tx) = v.shed.take() {
                let _ = tx.send(Shed::AuthenticatedFull);
            }
            t.count(Shed::AuthenticatedFull);
        }
        st.authenticated.insert(self.id, slot);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut st = self.table.lock();
        if let Some(slot) = st.unauthenticated.remove(&self.id) {
            remove_source(&mut st, slot.source, self.id);
        }
        st.authenticated.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(h: usize, per: usize, a: usize) -> Arc<ConnTable> {
        ConnTable::new(Bounds { handshakes: h, handshakes_per_source: per, authenticated: a })
    }
    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn a_full_pool_sheds_its_oldest_handshake_and_admits_the_new_one() {
        let t = table(2, 10, 10);
        let (_t1, mut r1) = t.admit(A);
        let (_t2, mut r2) = t.admit(B);
        let (_t3, mut r3) = t.admit(B);
        assert_eq!(r1.try_recv(), Ok(Shed::HandshakesFull));
        assert!(r2.try_recv().is_err() && r3.try_recv().is_err());
        assert_eq!(t.occupancy(), (2, 0));
    }

    #[test]
    fn a_source_at_its_bound_sheds_its_own_oldest_not_others() {
        let t = table(10, 2, 10);
        let (_o, mut other) = t.admit(B);
        let (_a1, mut a1) = t.admit(A);
        let (_a2, _r) = t.admit(A);
        let (_a3, _r3) = t.admit(A);
        assert_eq!(a1.try_recv(), Ok(Shed::SourceFull));
        assert!(other.try_recv().is_err(), "another source's handshake is kept");
        assert_eq!(t.occupancy(), (3, 0));
    }

    #[test]
    fn promotion_frees_the_handshake_place_and_bounds_the_authenticated_pool() {
        let t = table(1, 1, 1);
        let (t1, mut r1) = t.admit(A);
        t1.promote();
        assert_eq!(t.occupancy(), (0, 1));
        let (t2, _r2) = t.admit(A);
        assert!(r1.try_recv().is_err(), "an authenticated connection is not in the handshake pool");
        t2.promote();
        assert_eq!(r1.try_recv(), Ok(Shed::AuthenticatedFull));
        drop(t1);
        assert_eq!(t.occupancy(), (0, 1));
        drop(t2);
        assert_eq!(t.occupancy(), (0, 0));
    }

    #[test]
    fn ipv6_sources_are_grouped_by_64_prefix_and_mapped_ipv4_by_address() {
        let a: IpAddr = "2001:db8:1:2::5".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::5".parse().unwrap();
        assert_eq!(source_key(a), source_key(b));
        assert_ne!(source_key(a), source_key(c));
        let m: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(source_key(m), A);
    }
}
