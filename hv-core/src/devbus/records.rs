//! The devbus record table (SPEC.md §12, DEV-1 .. DEV-5): pure bookkeeping
//! of device records and their handshake state. Capability checks, copying
//! arguments and raising `VIRQ_DEVBUS` are the caller's; every operation
//! returns the domains to notify.
//!
//! # Invariants
//! - The state is derived, never stored: no closed side → `INITIALISING`
//!   (or `CONNECTED` once the backend connected); one → `CLOSING`; both →
//!   `CLOSED`. So a record can never claim a state its fields contradict.
//! - A dead side is a closed side; a record whose sides are both closed
//!   while one is dead does not exist (DEV-5): records never outlive the
//!   need for them, and when every domain named has died none remain.
//! - `connected` implies something was published; a frontend-published
//!   ring is only present while the frontend has not closed since.
//! - At most `DEVBUS_MAX_RECORDS` records; ids increase and are never reused.

use alloc::collections::BTreeMap;

use hypercall_abi::devbus::*;
use hypercall_abi::{DomId, Errno};

/// Domains to tell about a change (`VIRQ_DEVBUS`), at most both sides.
pub type Notify = heapless::Vec<DomId, 2>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Published {
    nr_ring_pages: u32,
    event_port: u32,
    ring_refs: [u32; DEVBUS_MAX_RING_PAGES as usize],
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Record {
    config: DevbusCreate,
    generation: u32,
    closed: u32,
    dead: u32,
    published: Option<Published>,
    /// `(backend_features, max_indirect_segments)` once connected.
    connected: Option<(u32, u32)>,
}

impl Record {
    fn state(&self) -> u32 {
        match self.closed {
            0 if self.connected.is_some() => DEVBUS_STATE_CONNECTED,
            0 => DEVBUS_STATE_INITIALISING,
            c if c == DEVBUS_SIDE_FRONT | DEVBUS_SIDE_BACK => DEVBUS_STATE_CLOSED,
            _ => DEVBUS_STATE_CLOSING,
        }
    }

    fn side_of(&self, dom: DomId) -> Option<u32> {
        if dom == self.config.frontend {
            Some(DEVBUS_SIDE_FRONT)
        } else if dom == self.config.backend {
            Some(DEVBUS_SIDE_BACK)
        } else {
            None
        }
    }

    fn living(&self) -> Notify {
        let mut out = Notify::new();
        if self.dead & DEVBUS_SIDE_FRONT == 0 {
            let _ = out.push(self.config.frontend);
        }
        if self.dead & DEVBUS_SIDE_BACK == 0 {
            let _ = out.push(self.config.backend);
        }
        out
    }

    /// Whether the record has to go (DEV-5).
    fn finished(&self) -> bool {
        self.closed == DEVBUS_SIDE_FRONT | DEVBUS_SIDE_BACK && self.dead != 0
    }

    fn touch(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    fn to_abi(&self, id: u32) -> DevbusRecord {
        let p = self.published.unwrap_or(Published {
            nr_ring_pages: 0,
            event_port: 0,
            ring_refs: [0; DEVBUS_MAX_RING_PAGES as usize],
        });
        let (backend_features, max_indirect_segments) = self.connected.unwrap_or((0, 0));
        DevbusRecord {
            id,
            kind: self.config.kind,
            backend: self.config.backend,
            frontend: self.config.frontend,
            state: self.state(),
            generation: self.generation,
            backend_handle: self.config.backend_handle,
            dev_flags: self.config.dev_flags,
            sectors: self.config.sectors,
            sector_size: self.config.sector_size,
            closed_sides: self.closed,
            mac: self.config.mac,
            nr_ring_pages: p.nr_ring_pages,
            event_port: p.event_port,
            ring_refs: p.ring_refs,
            backend_features,
            max_indirect_segments,
            reserved: [0; 6],
        }
    }
}

/// Every device record.
#[derive(Debug, Default)]
pub struct DeviceBus {
    records: BTreeMap<u32, Record>,
    next_id: u32,
}

/// Checks a `DevbusCreate` (DEV-2); `alive` says whether a domain exists.
fn check_create(c: &DevbusCreate, alive: &dyn Fn(DomId) -> bool) -> Result<(), Errno> {
    if c.pad != 0 || c.id != 0 || c.dev_flags & !DEVBUS_FLAG_READONLY != 0 {
        return Err(Errno::EINVAL);
    }
    if c.backend == c.frontend {
        return Err(Errno::EINVAL);
    }
    match c.kind {
        DEVBUS_KIND_BLK => {
            if c.sectors == 0 || !matches!(c.sector_size, 512 | 4096) || c.mac != [0; 8] {
                return Err(Errno::EINVAL);
            }
            if c.sector_size == 4096 && !c.sectors.is_multiple_of(8) {
                return Err(Errno::EINVAL);
            }
        }
        DEVBUS_KIND_NET => {
            let unicast = c.mac[0] & 1 == 0;
            let nonzero = c.mac[..6].iter().any(|&b| b != 0);
            if c.sectors != 0 || c.sector_size != 0 || !unicast || !nonzero || c.mac[6..] != [0; 2]
            {
                return Err(Errno::EINVAL);
            }
        }
        _ => return Err(Errno::EINVAL),
    }
    if !alive(c.backend) || !alive(c.frontend) {
        return Err(Errno::ESRCH);
    }
    Ok(())
}

impl DeviceBus {
    pub const fn new() -> DeviceBus {
        DeviceBus {
            records: BTreeMap::new(),
            next_id: 1,
        }
    }

    /// Records in the table.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn record(&mut self, id: u32) -> Result<&mut Record, Errno> {
        self.records.get_mut(&id).ok_or(Errno::ENOENT)
    }

    /// DEVBUSOP_CREATE (the caller checked `DEVBUS_ADMIN`).
    pub fn create(
        &mut self,
        config: &DevbusCreate,
        alive: &dyn Fn(DomId) -> bool,
    ) -> Result<(u32, Notify), Errno> {
        check_create(config, alive)?;
        if self.records.len() >= DEVBUS_MAX_RECORDS {
            return Err(Errno::ENOSPC);
        }
        let id = self.next_id;
        self.next_id = id.checked_add(1).ok_or(Errno::ENOSPC)?;
        let record = Record {
            config: *config,
            generation: 1,
            closed: 0,
            dead: 0,
            published: None,
            connected: None,
        };
        let notify = record.living();
        self.records.insert(id, record);
        Ok((id, notify))
    }

    /// DEVBUSOP_DESTROY (the caller checked `DEVBUS_ADMIN`).
    pub fn destroy(&mut self, id: u32) -> Result<Notify, Errno> {
        let record = self.records.remove(&id).ok_or(Errno::ENOENT)?;
        Ok(record.living())
    }

    /// DEVBUSOP_QUERY: the first record with id `>= from` that `caller` may see.
    pub fn query(&self, caller: DomId, admin: bool, from: u32) -> Option<DevbusRecord> {
        self.records
            .range(from..)
            .find(|(_, r)| admin || r.side_of(caller).is_some())
            .map(|(&id, r)| r.to_abi(id))
    }

    /// DEVBUSOP_FRONT_PUBLISH. `port_ok(backend, port)` says whether `port`
    /// is a port of the caller that is unbound for `backend`.
    pub fn publish(
        &mut self,
        caller: DomId,
        p: &DevbusPublish,
        port_ok: &dyn Fn(DomId, u32) -> bool,
    ) -> Result<Notify, Errno> {
        let r = self.record(p.id)?;
        if r.config.frontend != caller {
            return Err(Errno::EPERM);
        }
        if r.state() != DEVBUS_STATE_INITIALISING || r.published.is_some() {
            return Err(Errno::EBUSY);
        }
        if p.pad != 0 || !ring_pages_valid(r.config.kind, p.nr_ring_pages) {
            return Err(Errno::EINVAL);
        }
        let used = ring_refs_used(r.config.kind, p.nr_ring_pages) as usize;
        if p.ring_refs
            .get(used..)
            .is_none_or(|rest| rest.iter().any(|&g| g != 0))
        {
            return Err(Errno::EINVAL);
        }
        if !port_ok(r.config.backend, p.event_port) {
            return Err(Errno::EINVAL);
        }
        r.published = Some(Published {
            nr_ring_pages: p.nr_ring_pages,
            event_port: p.event_port,
            ring_refs: p.ring_refs,
        });
        r.touch();
        Ok(r.living())
    }

    /// DEVBUSOP_BACK_CONNECT.
    pub fn connect(&mut self, caller: DomId, c: &DevbusConnect) -> Result<Notify, Errno> {
        let r = self.record(c.id)?;
        if r.config.backend != caller {
            return Err(Errno::EPERM);
        }
        if c.pad != 0 {
            return Err(Errno::EINVAL);
        }
        if r.state() != DEVBUS_STATE_INITIALISING || r.published.is_none() {
            return Err(Errno::EBUSY);
        }
        r.connected = Some((c.backend_features, c.max_indirect_segments));
        r.touch();
        Ok(r.living())
    }

    /// Closes `side` of record `id`, removing it if it is finished.
    fn close_side(&mut self, id: u32, side: u32) -> Notify {
        let Some(r) = self.records.get_mut(&id) else {
            return Notify::new();
        };
        if r.closed & side != 0 {
            return Notify::new();
        }
        r.closed |= side;
        if side == DEVBUS_SIDE_FRONT {
            // What the frontend published dies with its side.
            r.published = None;
        }
        r.touch();
        let notify = r.living();
        if r.finished() {
            self.records.remove(&id);
        }
        notify
    }

    /// DEVBUSOP_CLOSE.
    pub fn close(&mut self, caller: DomId, id: u32) -> Result<Notify, Errno> {
        let side = self.record(id)?.side_of(caller).ok_or(Errno::EPERM)?;
        Ok(self.close_side(id, side))
    }

    /// DEVBUSOP_RESET.
    pub fn reset(&mut self, caller: DomId, id: u32) -> Result<Notify, Errno> {
        let r = self.record(id)?;
        if r.config.frontend != caller {
            return Err(Errno::EPERM);
        }
        if r.state() != DEVBUS_STATE_CLOSED {
            return Err(Errno::EBUSY);
        }
        r.closed = 0;
        r.published = None;
        r.connected = None;
        r.touch();
        Ok(r.living())
    }

    /// A domain ended (DEV-5): its side of every record closes; returns the
    /// living domains to notify (each at most once).
    pub fn domain_died(&mut self, dom: DomId) -> alloc::vec::Vec<DomId> {
        let mut notify = alloc::vec::Vec::new();
        let ids: alloc::vec::Vec<(u32, u32)> = self
            .records
            .iter()
            .filter_map(|(&id, r)| r.side_of(dom).map(|side| (id, side)))
            .collect();
        for (id, side) in ids {
            if let Some(r) = self.records.get_mut(&id) {
                r.dead |= side;
            }
            // Closing again after an explicit close still has to remove a
            // finished record.
            let mut n = self.close_side(id, side);
            if let Some(r) = self.records.get(&id) {
                if r.finished() {
                    self.records.remove(&id);
                }
            }
            if n.is_empty() {
                if let Some(r) = self.records.get(&id) {
                    n = r.living();
                }
            }
            for d in n {
                if d != dom && !notify.contains(&d) {
                    notify.push(d);
                }
            }
        }
        notify
    }

    /// Checks the invariants; the first breach, described.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.records.len() > DEVBUS_MAX_RECORDS {
            return Err("too many records");
        }
        for (&id, r) in &self.records {
            if id >= self.next_id {
                return Err("id not yet handed out");
            }
            if r.dead & !r.closed != 0 {
                return Err("a dead side is not closed");
            }
            if r.finished() {
                return Err("a finished record was kept");
            }
            if r.connected.is_some() && r.closed == 0 && r.published.is_none() {
                return Err("connected without a publish");
            }
            if r.closed & DEVBUS_SIDE_FRONT != 0 && r.published.is_some() {
                return Err("a closed frontend's rings are still published");
            }
            if r.config.frontend == r.config.backend {
                return Err("a record with one domain on both sides");
            }
            let s = r.state();
            let consistent = match s {
                DEVBUS_STATE_INITIALISING => r.closed == 0 && r.connected.is_none(),
                DEVBUS_STATE_CONNECTED => r.closed == 0 && r.connected.is_some(),
                DEVBUS_STATE_CLOSING => r.closed.count_ones() == 1,
                DEVBUS_STATE_CLOSED => r.closed.count_ones() == 2 && r.dead == 0,
                _ => false,
            };
            if !consistent {
                return Err("state and sides disagree");
            }
        }
        Ok(())
    }

    /// Whether any record names `dom` (used by tests and the audit).
    pub fn names(&self, dom: DomId) -> bool {
        self.records.values().any(|r| r.side_of(dom).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn blk(backend: DomId, frontend: DomId) -> DevbusCreate {
        DevbusCreate {
            kind: DEVBUS_KIND_BLK,
            backend,
            frontend,
            sector_size: 512,
            sectors: 2048,
            ..DevbusCreate::default()
        }
    }

    fn publish(id: u32) -> DevbusPublish {
        DevbusPublish {
            id,
            nr_ring_pages: 2,
            event_port: 3,
            pad: 0,
            ring_refs: [1, 2, 0, 0, 0, 0, 0, 0],
        }
    }

    fn connect(id: u32) -> DevbusConnect {
        DevbusConnect {
            id,
            backend_features: 7,
            max_indirect_segments: 256,
            pad: 0,
        }
    }

    const ALL_ALIVE: &dyn Fn(DomId) -> bool = &|_| true;
    const PORT_OK: &dyn Fn(DomId, u32) -> bool = &|_, _| true;

    fn state(bus: &DeviceBus, id: u32) -> u32 {
        bus.query(0, true, id).unwrap().state
    }

    #[test]
    fn handshake_close_and_reconnect() {
        let mut bus = DeviceBus::new();
        let (id, n) = bus.create(&blk(0, 1), ALL_ALIVE).unwrap();
        assert_eq!(n.as_slice(), &[1, 0]);
        assert_eq!(state(&bus, id), DEVBUS_STATE_INITIALISING);
        assert_eq!(
            bus.connect(0, &connect(id)),
            Err(Errno::EBUSY),
            "nothing published"
        );
        assert_eq!(bus.publish(0, &publish(id), PORT_OK), Err(Errno::EPERM));
        assert_eq!(
            bus.publish(1, &publish(id), &|_, _| false),
            Err(Errno::EINVAL),
            "port not unbound for the backend"
        );
        bus.publish(1, &publish(id), PORT_OK).unwrap();
        assert_eq!(bus.publish(1, &publish(id), PORT_OK), Err(Errno::EBUSY));
        assert_eq!(bus.connect(1, &connect(id)), Err(Errno::EPERM));
        bus.connect(0, &connect(id)).unwrap();
        let r = bus.query(1, false, 0).unwrap();
        assert_eq!(r.state, DEVBUS_STATE_CONNECTED);
        assert_eq!(
            (r.nr_ring_pages, r.ring_refs[1], r.max_indirect_segments),
            (2, 2, 256)
        );
        assert_eq!(bus.query(2, false, 0), None, "not visible to a stranger");
        // The backend closes, the frontend follows, then resets.
        bus.close(0, id).unwrap();
        assert_eq!(state(&bus, id), DEVBUS_STATE_CLOSING);
        assert_eq!(bus.reset(1, id), Err(Errno::EBUSY));
        bus.close(1, id).unwrap();
        assert_eq!(state(&bus, id), DEVBUS_STATE_CLOSED);
        assert_eq!(bus.reset(0, id), Err(Errno::EPERM));
        bus.reset(1, id).unwrap();
        let r = bus.query(1, false, 0).unwrap();
        assert_eq!(
            (r.state, r.nr_ring_pages, r.backend_features),
            (DEVBUS_STATE_INITIALISING, 0, 0)
        );
        bus.check().unwrap();
    }

    #[test]
    fn creation_is_checked() {
        let mut bus = DeviceBus::new();
        assert_eq!(bus.create(&blk(1, 1), ALL_ALIVE), Err(Errno::EINVAL));
        assert_eq!(bus.create(&blk(0, 9), &|d| d < 2), Err(Errno::ESRCH));
        let bad = DevbusCreate {
            sector_size: 1024,
            ..blk(0, 1)
        };
        assert_eq!(bus.create(&bad, ALL_ALIVE), Err(Errno::EINVAL));
        let net = DevbusCreate {
            kind: DEVBUS_KIND_NET,
            backend: 0,
            frontend: 1,
            mac: [0x02, 0, 0, 0, 0, 1, 0, 0],
            ..DevbusCreate::default()
        };
        assert!(bus.create(&net, ALL_ALIVE).is_ok());
        let multicast = DevbusCreate {
            mac: [0x03, 0, 0, 0, 0, 1, 0, 0],
            ..net
        };
        assert_eq!(bus.create(&multicast, ALL_ALIVE), Err(Errno::EINVAL));
        for _ in 1..DEVBUS_MAX_RECORDS {
            bus.create(&blk(0, 1), ALL_ALIVE).unwrap();
        }
        assert_eq!(bus.create(&blk(0, 1), ALL_ALIVE), Err(Errno::ENOSPC));
    }

    #[test]
    fn deaths_tear_records_down() {
        let mut bus = DeviceBus::new();
        let (a, _) = bus.create(&blk(0, 1), ALL_ALIVE).unwrap();
        let (b, _) = bus.create(&blk(0, 2), ALL_ALIVE).unwrap();
        bus.publish(1, &publish(a), PORT_OK).unwrap();
        bus.connect(0, &connect(a)).unwrap();
        // The frontend dies: the backend is told, the record is closing.
        assert_eq!(bus.domain_died(1), vec![0]);
        assert_eq!(state(&bus, a), DEVBUS_STATE_CLOSING);
        assert_eq!(bus.query(0, false, a).unwrap().nr_ring_pages, 0);
        // The backend closes its side: the record goes.
        bus.close(0, a).unwrap();
        assert_eq!(bus.query(0, true, a).map(|r| r.id), Some(b));
        // The backend dies: the other record closes and tells its frontend.
        assert_eq!(bus.domain_died(0), vec![2]);
        bus.close(2, b).unwrap();
        assert!(bus.is_empty());
    }

    #[derive(Clone, Debug)]
    enum Op {
        Create(DomId, DomId),
        Destroy(u32),
        Publish(DomId, u32, u32),
        Connect(DomId, u32),
        Close(DomId, u32),
        Reset(DomId, u32),
        Die(DomId),
    }

    fn op() -> impl Strategy<Value = Op> {
        let dom = 0u32..4;
        let id = 0u32..12;
        prop_oneof![
            3 => (dom.clone(), dom.clone()).prop_map(|(b, f)| Op::Create(b, f)),
            1 => id.clone().prop_map(Op::Destroy),
            3 => (dom.clone(), id.clone(), 0u32..10).prop_map(|(d, i, n)| Op::Publish(d, i, n)),
            3 => (dom.clone(), id.clone()).prop_map(|(d, i)| Op::Connect(d, i)),
            3 => (dom.clone(), id.clone()).prop_map(|(d, i)| Op::Close(d, i)),
            2 => (dom.clone(), id.clone()).prop_map(|(d, i)| Op::Reset(d, i)),
            1 => dom.prop_map(Op::Die),
        ]
    }

    proptest! {
        /// DEV-1..5: random operations by any domain, deaths included, never
        /// leave an inconsistent record, never notify a dead domain, and when
        /// every domain has died nothing is left.
        #[test]
        fn random_operations_keep_records_consistent(ops in proptest::collection::vec(op(), 1..150)) {
            let mut bus = DeviceBus::new();
            let mut dead = std::collections::BTreeSet::new();
            for op in ops {
                let alive = |d: DomId| !dead.contains(&d);
                let notified: alloc::vec::Vec<DomId> = match op {
                    Op::Create(b, f) => bus.create(&blk(b, f), &alive).map(|(_, n)| n.to_vec()).unwrap_or_default(),
                    Op::Destroy(i) => bus.destroy(i).map(|n| n.to_vec()).unwrap_or_default(),
                    Op::Publish(d, i, n) => {
                        let p = DevbusPublish { nr_ring_pages: n, ..publish(i) };
                        let p = if n > 2 { DevbusPublish { ring_refs: [1; 8], ..p } } else { p };
                        bus.publish(d, &p, PORT_OK).map(|n| n.to_vec()).unwrap_or_default()
                    }
                    Op::Connect(d, i) => bus.connect(d, &connect(i)).map(|n| n.to_vec()).unwrap_or_default(),
                    Op::Close(d, i) => bus.close(d, i).map(|n| n.to_vec()).unwrap_or_default(),
                    Op::Reset(d, i) => bus.reset(d, i).map(|n| n.to_vec()).unwrap_or_default(),
                    Op::Die(d) => {
                        if dead.insert(d) { bus.domain_died(d) } else { alloc::vec::Vec::new() }
                    }
                };
                prop_assert!(bus.check().is_ok(), "{:?}", bus.check());
                for d in &notified {
                    prop_assert!(!dead.contains(d), "notified dead d{}", d);
                }
                // A dead domain's side of every record is closed.
                let mut from = 0;
                while let Some(r) = bus.query(0, true, from) {
                    if dead.contains(&r.frontend) {
                        prop_assert!(r.closed_sides & DEVBUS_SIDE_FRONT != 0);
                        prop_assert_eq!(r.nr_ring_pages, 0);
                    }
                    if dead.contains(&r.backend) {
                        prop_assert!(r.closed_sides & DEVBUS_SIDE_BACK != 0);
                    }
                    from = r.id + 1;
                }
            }
            // Everyone dies: nothing leaks.
            for d in 0..4 {
                if dead.insert(d) {
                    bus.domain_died(d);
                }
            }
            prop_assert!(bus.is_empty());
        }
    }
}
