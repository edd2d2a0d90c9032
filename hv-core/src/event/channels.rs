//! The event-channel port state machine of every domain (EVT-1 .. EVT-4).
//!
//! Pure bookkeeping: which ports exist and what they are connected to.
//! Setting pending bits and waking vCPUs is left to an [`EventSink`].
//!
//! # Invariants
//! - Port 0 is never allocated.
//! - Interdomain channels are symmetric: `(d, p)` is connected to `(r, q)`
//!   exactly when `(r, q)` is connected to `(d, p)`.
//! - No port is connected to a domain that is gone; when a domain dies, its
//!   peers' ports fall back to unbound (naming the dead domain, which can never
//!   bind again since domain ids are not reused).
//! - A VIRQ is bound to at most one port of a domain.

use alloc::vec::Vec;

use hypercall_abi::evtchn::{Port, NR_VIRQS, VIRQ_TIMER};
use hypercall_abi::{DomId, Errno};

/// Ports a domain may hold (the 2-level ABI addresses 4096).
pub const MAX_PORTS: u32 = 1024;

/// What a port is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelState {
    Free,
    /// Allocated for `remote` to bind to.
    Unbound {
        remote: DomId,
    },
    /// Connected to `remote`'s `remote_port`.
    Interdomain {
        remote: DomId,
        remote_port: Port,
    },
    Virq(u32),
    Ipi,
    /// A device interrupt: the hypervisor's interrupt vector (PDEV-5).
    Pirq(u32),
}

#[derive(Clone, Copy, Debug)]
struct Channel {
    state: ChannelState,
    vcpu: u32,
}

const FREE: Channel = Channel {
    state: ChannelState::Free,
    vcpu: 0,
};

#[derive(Default)]
struct DomainPorts {
    ports: Vec<Channel>,
    /// The port of each global VIRQ (0 = unbound).
    virqs: [Port; NR_VIRQS as usize],
    /// VIRQ_TIMER is per vCPU: each vCPU binds its own (since 0.5).
    vcpu_timers: alloc::collections::BTreeMap<u32, Port>,
}

/// Per-domain state indexed directly by domain id (ids are small and never
/// reused): one bounds check instead of a tree search on the send path.
struct DomMap<T> {
    slots: Vec<Option<T>>,
}

impl<T: Default> DomMap<T> {
    const fn new() -> Self {
        DomMap { slots: Vec::new() }
    }

    fn get(&self, dom: &DomId) -> Option<&T> {
        self.slots.get(*dom as usize)?.as_ref()
    }

    fn get_mut(&mut self, dom: &DomId) -> Option<&mut T> {
        self.slots.get_mut(*dom as usize)?.as_mut()
    }

    fn contains_key(&self, dom: &DomId) -> bool {
        self.get(dom).is_some()
    }

    fn insert_default(&mut self, dom: DomId) {
        let i = dom as usize;
        if self.slots.len() <= i {
            self.slots.resize_with(i + 1, || None);
        }
        if self.slots[i].is_none() {
            self.slots[i] = Some(T::default());
        }
    }

    fn remove(&mut self, dom: &DomId) -> Option<T> {
        self.slots.get_mut(*dom as usize)?.take()
    }

    fn iter(&self) -> impl Iterator<Item = (DomId, &T)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, d)| Some((i as DomId, d.as_ref()?)))
    }
}

impl<T: Default> Default for DomMap<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// Sets a port pending (and notifies), as the hypervisor does for real.
pub trait EventSink {
    fn set_pending(&mut self, dom: DomId, port: Port, vcpu: u32);
}

/// Every domain's ports.
#[derive(Default)]
pub struct EventChannels {
    domains: DomMap<DomainPorts>,
}

impl EventChannels {
    pub const fn new() -> EventChannels {
        EventChannels {
            domains: DomMap::new(),
        }
    }

    /// Makes `dom` known (at domain creation).
    pub fn add_domain(&mut self, dom: DomId) {
        self.domains.insert_default(dom);
    }

    /// Ports of `dom` that are not closed (port 0 never counts), TS-8.
    pub fn ports_in_use(&self, dom: DomId) -> u32 {
        self.domains.get(&dom).map_or(0, |d| {
            d.ports
                .iter()
                .skip(1)
                .filter(|c| c.state != ChannelState::Free)
                .count() as u32
        })
    }

    fn ports(&mut self, dom: DomId) -> Result<&mut DomainPorts, Errno> {
        self.domains.get_mut(&dom).ok_or(Errno::ESRCH)
    }

    fn channel(&mut self, dom: DomId, port: Port) -> Result<&mut Channel, Errno> {
        self.ports(dom)?
            .ports
            .get_mut(port as usize)
            .ok_or(Errno::EINVAL)
    }

    fn state(&self, dom: DomId, port: Port) -> Option<ChannelState> {
        self.domains
            .get(&dom)?
            .ports
            .get(port as usize)
            .map(|c| c.state)
    }

    fn allocate(&mut self, dom: DomId, state: ChannelState, vcpu: u32) -> Result<Port, Errno> {
        let d = self.ports(dom)?;
        if d.ports.is_empty() {
            d.ports.push(FREE); // port 0
        }
        let port = match d
            .ports
            .iter()
            .skip(1)
            .position(|c| c.state == ChannelState::Free)
        {
            Some(i) => i + 1,
            None if (d.ports.len() as u32) < MAX_PORTS => {
                d.ports.push(FREE);
                d.ports.len() - 1
            }
            None => return Err(Errno::ENOSPC),
        };
        d.ports[port] = Channel { state, vcpu };
        Ok(port as Port)
    }

    /// EVTCHNOP_ALLOC_UNBOUND.
    pub fn alloc_unbound(&mut self, dom: DomId, remote: DomId) -> Result<Port, Errno> {
        if !self.domains.contains_key(&remote) {
            return Err(Errno::ESRCH);
        }
        self.allocate(dom, ChannelState::Unbound { remote }, 0)
    }

    /// EVTCHNOP_BIND_INTERDOMAIN: `remote_port` must be unbound for `dom`.
    pub fn bind_interdomain(
        &mut self,
        dom: DomId,
        remote: DomId,
        remote_port: Port,
    ) -> Result<Port, Errno> {
        if !self.domains.contains_key(&remote) || !self.domains.contains_key(&dom) {
            return Err(Errno::ESRCH);
        }
        if self.state(remote, remote_port) != Some(ChannelState::Unbound { remote: dom })
            || remote_port == 0
        {
            return Err(Errno::EINVAL);
        }
        if dom == remote {
            // Loopback: allocate first, then connect both ends.
            let port = self.allocate(dom, ChannelState::Free, 0)?;
            self.channel(dom, port)?.state = ChannelState::Interdomain {
                remote,
                remote_port,
            };
            self.channel(remote, remote_port)?.state = ChannelState::Interdomain {
                remote: dom,
                remote_port: port,
            };
            return Ok(port);
        }
        let port = self.allocate(
            dom,
            ChannelState::Interdomain {
                remote,
                remote_port,
            },
            0,
        )?;
        self.channel(remote, remote_port)?.state = ChannelState::Interdomain {
            remote: dom,
            remote_port: port,
        };
        Ok(port)
    }

    /// EVTCHNOP_BIND_VIRQ.
    pub fn bind_virq(&mut self, dom: DomId, virq: u32, vcpu: u32) -> Result<Port, Errno> {
        if virq >= NR_VIRQS {
            return Err(Errno::EINVAL);
        }
        if virq == VIRQ_TIMER {
            if self.ports(dom)?.vcpu_timers.contains_key(&vcpu) {
                return Err(Errno::EEXIST);
            }
            let port = self.allocate(dom, ChannelState::Virq(virq), vcpu)?;
            self.ports(dom)?.vcpu_timers.insert(vcpu, port);
            return Ok(port);
        }
        if self.ports(dom)?.virqs[virq as usize] != 0 {
            return Err(Errno::EEXIST);
        }
        let port = self.allocate(dom, ChannelState::Virq(virq), vcpu)?;
        self.ports(dom)?.virqs[virq as usize] = port;
        Ok(port)
    }

    /// EVTCHNOP_BIND_IPI.
    pub fn bind_ipi(&mut self, dom: DomId, vcpu: u32) -> Result<Port, Errno> {
        self.allocate(dom, ChannelState::Ipi, vcpu)
    }

    /// `PHYSDEVOP_BIND_MSI`: a port for device interrupt `vector` (PDEV-5).
    pub fn bind_pirq(&mut self, dom: DomId, vector: u32, vcpu: u32) -> Result<Port, Errno> {
        self.allocate(dom, ChannelState::Pirq(vector), vcpu)
    }

    /// Sets `dom`'s port pending if it is still bound to device interrupt
    /// `vector` (a closed or reused port is left alone).
    pub fn send_pirq(&mut self, dom: DomId, port: Port, vector: u32, sink: &mut dyn EventSink) {
        let Some(c) = self
            .domains
            .get(&dom)
            .and_then(|d| d.ports.get(port as usize))
        else {
            return;
        };
        if c.state == ChannelState::Pirq(vector) {
            sink.set_pending(dom, port, c.vcpu);
        }
    }

    /// EVTCHNOP_BIND_VCPU.
    pub fn bind_vcpu(&mut self, dom: DomId, port: Port, vcpu: u32) -> Result<(), Errno> {
        let c = self.channel(dom, port)?;
        // A per-vCPU VIRQ stays with the vCPU that bound it.
        if matches!(c.state, ChannelState::Free | ChannelState::Virq(VIRQ_TIMER)) {
            return Err(Errno::EINVAL);
        }
        c.vcpu = vcpu;
        Ok(())
    }

    /// EVTCHNOP_CLOSE: the peer of an interdomain channel falls back to unbound.
    pub fn close(&mut self, dom: DomId, port: Port) -> Result<(), Errno> {
        let c = *self.channel(dom, port)?;
        match c.state {
            ChannelState::Free => return Err(Errno::EINVAL),
            ChannelState::Interdomain {
                remote,
                remote_port,
            } => {
                if let Ok(peer) = self.channel(remote, remote_port) {
                    peer.state = ChannelState::Unbound { remote: dom };
                }
            }
            ChannelState::Virq(VIRQ_TIMER) => {
                self.ports(dom)?.vcpu_timers.remove(&c.vcpu);
            }
            ChannelState::Virq(v) => self.ports(dom)?.virqs[v as usize] = 0,
            ChannelState::Unbound { .. } | ChannelState::Ipi | ChannelState::Pirq(_) => {}
        }
        *self.channel(dom, port)? = FREE;
        Ok(())
    }

    /// EVTCHNOP_SEND.
    pub fn send(&mut self, dom: DomId, port: Port, sink: &mut dyn EventSink) -> Result<(), Errno> {
        let c = *self.channel(dom, port)?;
        match c.state {
            ChannelState::Interdomain {
                remote,
                remote_port,
            } => {
                let vcpu = self
                    .domains
                    .get(&remote)
                    .and_then(|d| d.ports.get(remote_port as usize))
                    .map_or(0, |p| p.vcpu);
                sink.set_pending(remote, remote_port, vcpu);
                Ok(())
            }
            ChannelState::Ipi => {
                sink.set_pending(dom, port, c.vcpu);
                Ok(())
            }
            // Nobody is listening yet: the notification is dropped.
            ChannelState::Unbound { .. } => Ok(()),
            ChannelState::Virq(_) | ChannelState::Pirq(_) | ChannelState::Free => {
                Err(Errno::EINVAL)
            }
        }
    }

    /// Raises `virq` for `dom`, if it bound it.
    pub fn send_virq(&mut self, dom: DomId, virq: u32, sink: &mut dyn EventSink) {
        let Some(d) = self.domains.get(&dom) else {
            return;
        };
        let port = if virq == VIRQ_TIMER {
            d.vcpu_timers.get(&0).copied().unwrap_or(0)
        } else {
            let Some(&port) = d.virqs.get(virq as usize) else {
                return;
            };
            port
        };
        if port != 0 {
            let vcpu = d.ports.get(port as usize).map_or(0, |c| c.vcpu);
            sink.set_pending(dom, port, vcpu);
        }
    }

    /// Raises VIRQ_TIMER for vCPU `vcpu` of `dom` (if that vCPU bound it).
    pub fn send_vcpu_timer(&mut self, dom: DomId, vcpu: u32, sink: &mut dyn EventSink) {
        let Some(d) = self.domains.get(&dom) else {
            return;
        };
        if let Some(&port) = d.vcpu_timers.get(&vcpu) {
            sink.set_pending(dom, port, vcpu);
        }
    }

    /// EVTCHNOP_STATUS: state and notified vCPU of one of `dom`'s ports.
    pub fn status(&self, dom: DomId, port: Port) -> Result<(ChannelState, u32), Errno> {
        let d = self.domains.get(&dom).ok_or(Errno::ESRCH)?;
        d.ports
            .get(port as usize)
            .map(|c| (c.state, c.vcpu))
            .ok_or(Errno::EINVAL)
    }

    /// Whether `port` is one of `dom`'s ports in use.
    pub fn is_open(&self, dom: DomId, port: Port) -> bool {
        port != 0
            && self
                .state(dom, port)
                .is_some_and(|s| s != ChannelState::Free)
    }

    /// Forgets a dead domain; its peers' ports fall back to unbound and are
    /// set pending through `sink`, so a peer waiting on one wakes and sees
    /// the channel unbound (EVT-4).
    pub fn remove_domain(&mut self, dom: DomId, sink: &mut dyn EventSink) {
        let Some(d) = self.domains.remove(&dom) else {
            return;
        };
        for c in d.ports {
            if let ChannelState::Interdomain {
                remote,
                remote_port,
            } = c.state
            {
                if let Ok(peer) = self.channel(remote, remote_port) {
                    peer.state = ChannelState::Unbound { remote: dom };
                    let vcpu = peer.vcpu;
                    sink.set_pending(remote, remote_port, vcpu);
                }
            }
        }
    }

    /// Checks the invariants; the first breach, described.
    pub fn check(&self) -> Result<(), &'static str> {
        for (dom, d) in self.domains.iter() {
            if d.ports
                .first()
                .is_some_and(|c| c.state != ChannelState::Free)
            {
                return Err("port 0 in use");
            }
            for (port, c) in d.ports.iter().enumerate() {
                let consistent = match c.state {
                    ChannelState::Interdomain {
                        remote,
                        remote_port,
                    } => {
                        self.state(remote, remote_port)
                            == Some(ChannelState::Interdomain {
                                remote: dom,
                                remote_port: port as Port,
                            })
                    }
                    ChannelState::Virq(VIRQ_TIMER) => {
                        d.vcpu_timers.get(&c.vcpu) == Some(&(port as Port))
                    }
                    ChannelState::Virq(v) => d.virqs.get(v as usize) == Some(&(port as Port)),
                    _ => true,
                };
                if !consistent {
                    return Err("interdomain channel not symmetric, or VIRQ table out of step");
                }
            }
            for (&vcpu, &port) in &d.vcpu_timers {
                let c = d.ports.get(port as usize);
                if c.map(|c| (c.state, c.vcpu)) != Some((ChannelState::Virq(VIRQ_TIMER), vcpu)) {
                    return Err("a vCPU's timer VIRQ is bound to a port that is not its own");
                }
            }
            for (v, &port) in d.virqs.iter().enumerate() {
                if port != 0
                    && d.ports.get(port as usize).map(|c| c.state)
                        != Some(ChannelState::Virq(v as u32))
                {
                    return Err("VIRQ bound to a port that is not that VIRQ");
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Default)]
    struct Record(Vec<(DomId, Port, u32)>);
    impl EventSink for Record {
        fn set_pending(&mut self, dom: DomId, port: Port, vcpu: u32) {
            self.0.push((dom, port, vcpu));
        }
    }

    #[test]
    fn connect_send_close() {
        let mut ev = EventChannels::new();
        ev.add_domain(1);
        ev.add_domain(2);
        let p = ev.alloc_unbound(1, 2).unwrap();
        assert_eq!(p, 1, "port 0 is never handed out");
        assert_eq!(ev.bind_interdomain(3, 1, p), Err(Errno::ESRCH));
        assert_eq!(ev.bind_interdomain(2, 1, p + 1), Err(Errno::EINVAL));
        let q = ev.bind_interdomain(2, 1, p).unwrap();
        assert_eq!(
            ev.bind_interdomain(2, 1, p),
            Err(Errno::EINVAL),
            "bound twice"
        );
        let mut sink = Record::default();
        ev.send(2, q, &mut sink).unwrap();
        ev.send(1, p, &mut sink).unwrap();
        assert_eq!(sink.0, vec![(1, p, 0), (2, q, 0)]);
        ev.close(1, p).unwrap();
        assert_eq!(
            ev.status(2, q).unwrap().0,
            ChannelState::Unbound { remote: 1 }
        );
        assert_eq!(ev.close(1, p), Err(Errno::EINVAL));
        ev.check().unwrap();
    }

    #[test]
    fn timer_virq_is_per_vcpu() {
        struct Sink(Vec<(DomId, Port, u32)>);
        impl EventSink for Sink {
            fn set_pending(&mut self, dom: DomId, port: Port, vcpu: u32) {
                self.0.push((dom, port, vcpu));
            }
        }
        let mut ev = EventChannels::new();
        ev.add_domain(3);
        let p0 = ev.bind_virq(3, VIRQ_TIMER, 0).unwrap();
        let p2 = ev.bind_virq(3, VIRQ_TIMER, 2).unwrap();
        assert_ne!(p0, p2);
        assert_eq!(ev.bind_virq(3, VIRQ_TIMER, 2), Err(Errno::EEXIST));
        assert_eq!(ev.bind_vcpu(3, p2, 1), Err(Errno::EINVAL));
        let mut sink = Sink(Vec::new());
        ev.send_vcpu_timer(3, 2, &mut sink);
        ev.send_vcpu_timer(3, 1, &mut sink);
        ev.send_virq(3, VIRQ_TIMER, &mut sink);
        assert_eq!(sink.0, [(3, p2, 2), (3, p0, 0)]);
        ev.check().unwrap();
        ev.close(3, p2).unwrap();
        assert_eq!(ev.bind_virq(3, VIRQ_TIMER, 2).map(|_| ()), Ok(()));
        ev.check().unwrap();
    }

    #[test]
    fn virqs_ipis_and_death() {
        let mut ev = EventChannels::new();
        ev.add_domain(0);
        ev.add_domain(5);
        let v = ev.bind_virq(0, 3, 0).unwrap();
        assert_eq!(ev.bind_virq(0, 3, 0), Err(Errno::EEXIST));
        assert_eq!(ev.bind_virq(0, NR_VIRQS, 0), Err(Errno::EINVAL));
        let mut sink = Record::default();
        assert_eq!(
            ev.send(0, v, &mut sink),
            Err(Errno::EINVAL),
            "VIRQ ports are not sendable"
        );
        ev.send_virq(0, 3, &mut sink);
        let i = ev.bind_ipi(5, 0).unwrap();
        ev.send(5, i, &mut sink).unwrap();
        assert_eq!(sink.0, vec![(0, v, 0), (5, i, 0)]);
        let u = ev.alloc_unbound(0, 5).unwrap();
        let b = ev.bind_interdomain(5, 0, u).unwrap();
        let mut sink = Record::default();
        ev.remove_domain(5, &mut sink);
        assert_eq!(sink.0, vec![(0, u, 0)], "the surviving peer is notified");
        assert_eq!(
            ev.status(0, u).unwrap().0,
            ChannelState::Unbound { remote: 5 }
        );
        assert_eq!(ev.bind_interdomain(5, 0, u), Err(Errno::ESRCH));
        assert!(!ev.is_open(5, b));
        ev.check().unwrap();
    }

    #[test]
    fn device_interrupt_ports() {
        let mut ev = EventChannels::new();
        ev.add_domain(0);
        let mut rec = Record::default();
        let p = ev.bind_pirq(0, 0x41, 0).unwrap();
        assert_eq!(ev.status(0, p), Ok((ChannelState::Pirq(0x41), 0)));
        // Guests cannot send on it.
        assert_eq!(ev.send(0, p, &mut rec), Err(Errno::EINVAL));
        ev.send_pirq(0, p, 0x41, &mut rec);
        assert_eq!(rec.0, [(0, p, 0)]);
        // Another vector, or the port closed and reused: nothing.
        ev.send_pirq(0, p, 0x42, &mut rec);
        ev.close(0, p).unwrap();
        let q = ev.bind_ipi(0, 0).unwrap();
        assert_eq!(q, p);
        ev.send_pirq(0, p, 0x41, &mut rec);
        ev.send_pirq(7, p, 0x41, &mut rec);
        assert_eq!(rec.0.len(), 1);
        assert!(ev.check().is_ok());
    }

    #[test]
    fn port_exhaustion() {
        let mut ev = EventChannels::new();
        ev.add_domain(1);
        for _ in 1..MAX_PORTS {
            ev.bind_ipi(1, 0).unwrap();
        }
        assert_eq!(ev.bind_ipi(1, 0), Err(Errno::ENOSPC));
        ev.close(1, 7).unwrap();
        assert_eq!(ev.bind_ipi(1, 0), Ok(7));
    }

    #[derive(Clone, Debug)]
    enum Op {
        AllocUnbound(DomId, DomId),
        Bind(DomId, DomId, Port),
        Virq(DomId, u32),
        Ipi(DomId),
        Close(DomId, Port),
        Send(DomId, Port),
        Kill(DomId),
        Create(DomId),
    }

    fn op() -> impl Strategy<Value = Op> {
        let d = 0u32..4;
        let p = 0u32..8;
        prop_oneof![
            (d.clone(), d.clone()).prop_map(|(a, b)| Op::AllocUnbound(a, b)),
            (d.clone(), d.clone(), p.clone()).prop_map(|(a, b, q)| Op::Bind(a, b, q)),
            (d.clone(), 0u32..10).prop_map(|(a, v)| Op::Virq(a, v)),
            d.clone().prop_map(Op::Ipi),
            (d.clone(), p.clone()).prop_map(|(a, q)| Op::Close(a, q)),
            (d.clone(), p).prop_map(|(a, q)| Op::Send(a, q)),
            d.clone().prop_map(Op::Kill),
            d.prop_map(Op::Create),
        ]
    }

    proptest! {
        /// Random operations from several domains, deaths included, keep the
        /// invariants, and every notification goes to a live domain's open port.
        #[test]
        fn random_operations_keep_the_invariants(ops in proptest::collection::vec(op(), 1..200)) {
            let mut ev = EventChannels::new();
            let mut dead = std::collections::BTreeSet::new();
            for d in 0..4 { ev.add_domain(d); }
            for op in ops {
                let mut sink = Record::default();
                match op {
                    Op::AllocUnbound(a, b) => { let _ = ev.alloc_unbound(a, b); }
                    Op::Bind(a, b, q) => { let _ = ev.bind_interdomain(a, b, q); }
                    Op::Virq(a, v) => { let _ = ev.bind_virq(a, v, 0); }
                    Op::Ipi(a) => { let _ = ev.bind_ipi(a, 0); }
                    Op::Close(a, q) => { let _ = ev.close(a, q); }
                    Op::Send(a, q) => { let _ = ev.send(a, q, &mut sink); }
                    Op::Kill(a) => { ev.remove_domain(a, &mut sink); dead.insert(a); }
                    // Domain ids are never reused: a dead one stays dead.
                    Op::Create(a) => if !dead.contains(&a) { ev.add_domain(a) },
                }
                for &(d, p, _) in &sink.0 {
                    prop_assert!(!dead.contains(&d), "notified a dead domain");
                    prop_assert!(ev.is_open(d, p), "notified a closed port");
                }
                prop_assert_eq!(ev.check(), Ok(()));
            }
        }
    }
}
