//! The interfaces a live run captures on, kept in step as they come and go:
//! attached when the kernel announces them ([`crate::link_watch`]), so a new
//! container's first packets are counted; listed again every second as a
//! safety net; an interface named with `--iface` that is deleted is attached
//! again when it comes back. What crossed an interface before it could be
//! attached is read from its driver counters and reported.

use std::collections::{BTreeMap, BTreeSet};

use crossbeam_channel::bounded;
use tracing::{debug, info, warn};

use super::source::{AttachError, FlowSource};
use crate::{
    ifaces::{self, Iface, IfaceSelection, LinkCounters},
    link_watch::{LinkEvent, LinkWatch},
};

/// An interface named with `--iface` could not be captured on.
#[derive(Debug, thiserror::Error)]
#[error("{what} interface {iface}")]
pub struct ExplicitAttachError {
    /// What failed ("attaching to", ...).
    what: &'static str,
    /// Interface name.
    iface: String,
    /// Cause.
    source: AttachError,
}

/// What the interface policy counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IfaceStats {
    /// Attach failures.
    pub attach_failures: u64,
    /// Interfaces attached after start-up (new ones, and ones back).
    pub attached_later: u64,
    /// Frames (and bytes) that crossed those interfaces before they were
    /// attached, from their driver counters: traffic never counted.
    pub before_attach: LinkCounters,
    /// Times the notifications overflowed and the interfaces were listed again.
    pub notification_overruns: u64,
}

/// The interfaces of a live run and how they are kept.
pub struct Interfaces {
    selection: IfaceSelection,
    watch: Option<LinkWatch>,
    /// Attach refused for this index under this name: not tried again until
    /// it changes (so one broken interface does not warn every second).
    refused: BTreeMap<u32, String>,
    /// `--iface` names deleted and not back yet.
    gone: BTreeSet<String>,
    started: bool,
    stats: IfaceStats,
}

impl Interfaces {
    /// A policy for `selection`; nothing attached or watched yet.
    pub fn new(selection: IfaceSelection) -> Self {
        Self {
            selection,
            watch: None,
            refused: BTreeMap::new(),
            gone: BTreeSet::new(),
            started: false,
            stats: IfaceStats::default(),
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> IfaceStats {
        self.stats
    }

    /// Subscribes to link notifications (first, so nothing created meanwhile
    /// is missed), then attaches to the `--iface` interfaces (`explicit`) or
    /// every selected one. A named interface that fails is an error, and
    /// nothing stays attached. `names`: index -> name of every interface.
    pub fn start<S: FlowSource>(
        &mut self,
        source: &mut S,
        explicit: &[Iface],
        names: &mut BTreeMap<u32, String>,
    ) -> Result<(), ExplicitAttachError> {
        let (wake_tx, wake_rx) = bounded(1);
        match LinkWatch::start(wake_tx) {
            Ok(w) => {
                self.watch = Some(w);
                source.wake_on(wake_rx);
            }
            Err(e) => {
                warn!(error = %e, "Cannot subscribe to interface notifications; new interfaces are found by a poll every second (their first packets may be missed).");
            }
        }
        for iface in explicit {
            if let Err(e) = source.attach(iface) {
                self.stats.attach_failures += 1;
                for i in source.monitored().into_keys() {
                    source.detach(i);
                }
                let what = match e {
                    AttachError::Socket(_) => "capturing on",
                    _ => "attaching to",
                };
                return Err(ExplicitAttachError {
                    what,
                    iface: iface.name.clone(),
                    source: e,
                });
            }
            if !iface.up {
                warn!(iface = %iface.name, "Interface is down: flowlens monitors it, but no traffic crosses it until it is up.");
            }
        }
        self.poll(source, names);
        self.started = true;
        Ok(())
    }

    /// Applies the link changes that arrived; lists the interfaces again
    /// after an overrun.
    pub fn apply_notifications<S: FlowSource>(
        &mut self,
        source: &mut S,
        names: &mut BTreeMap<u32, String>,
    ) {
        let mut overrun = false;
        while let Some(ev) = self.watch.as_ref().and_then(LinkWatch::try_recv) {
            match ev {
                LinkEvent::Changed(iface) => {
                    names.insert(iface.index, iface.name.clone());
                    let attached = source.monitored().remove(&iface.index);
                    self.consider(source, &iface, attached);
                }
                LinkEvent::Deleted { index, .. } => self.gone_away(source, index),
                LinkEvent::Overrun => overrun = true,
            }
        }
        if overrun {
            self.stats.notification_overruns += 1;
            warn!("Interface notifications overflowed; listing the interfaces again.");
            self.poll(source, names);
        }
    }

    /// Lists the interfaces (the safety net behind the notifications):
    /// updates names, drops vanished ones, attaches selected ones not yet
    /// attached.
    pub fn poll<S: FlowSource>(&mut self, source: &mut S, names: &mut BTreeMap<u32, String>) {
        let now = ifaces::list();
        for (idx, iface) in &now {
            names.insert(*idx, iface.name.clone());
        }
        let mut monitored = source.monitored();
        for i in monitored.keys().filter(|i| !now.contains_key(i)) {
            self.gone_away(source, *i);
        }
        self.refused
            .retain(|i, name| now.get(i).is_some_and(|f| f.name == *name));
        for iface in now.values() {
            let attached = monitored.remove(&iface.index);
            self.consider(source, iface, attached);
        }
    }

    /// Attaches `iface` when it is selected and not attached (`attached`:
    /// its name when it is); detaches it when it is attached but no longer
    /// selected (renamed).
    fn consider<S: FlowSource>(&mut self, source: &mut S, iface: &Iface, attached: Option<String>) {
        let wanted = self.selection.wants(iface);
        match attached {
            Some(name) if !wanted => {
                info!(iface = %iface.name, was = %name, "Interface renamed and no longer selected; not monitoring it any more.");
                self.release(source, iface.index, name);
            }
            Some(_) => {}
            None if wanted => {
                if self.refused.get(&iface.index) != Some(&iface.name) {
                    self.attach(source, iface);
                }
            }
            None => {
                if self.selection.is_named(&iface.name) {
                    warn!(iface = %iface.name, link_type = iface.link_type, "Interface named with --iface is back, but not as an Ethernet-like link; not monitoring it.");
                }
            }
        }
    }

    fn attach<S: FlowSource>(&mut self, source: &mut S, iface: &Iface) {
        // Read before attaching: what the driver counted so far was not seen
        // (a lower bound: frames between this read and the attach are neither).
        let before = if self.started {
            ifaces::counters(&iface.name)
        } else {
            None
        };
        if let Err(e) = source.attach(iface) {
            self.stats.attach_failures += 1;
            self.refused.insert(iface.index, iface.name.clone());
            warn!(iface = %iface.name, error = %e, "Cannot monitor interface; its traffic is not counted.");
            return;
        }
        self.refused.remove(&iface.index);
        if !self.started {
            return;
        }
        self.stats.attached_later += 1;
        if self.gone.remove(&iface.name) {
            info!(iface = %iface.name, ifindex = iface.index, "Interface named with --iface is back; monitoring it again.");
        } else {
            debug!(iface = %iface.name, ifindex = iface.index, up = iface.up, "New interface attached.");
        }
        if let Some(c) = before.filter(|c| c.packets > 0) {
            self.stats.before_attach += c;
            warn!(iface = %iface.name, frames = c.packets, bytes = c.bytes, "Traffic crossed this interface before flowlens could attach to it; it is not counted (interface_frames_before_attach).");
        }
    }

    /// Detaches an interface that is gone (deleted or moved to another
    /// network namespace); a `--iface` one is waited for.
    fn gone_away<S: FlowSource>(&mut self, source: &mut S, index: u32) {
        self.refused.remove(&index);
        let Some(name) = source.monitored().remove(&index) else {
            return;
        };
        self.release(source, index, name);
    }

    /// Detaches `index` (named `name` when attached); a `--iface` one is
    /// waited for.
    fn release<S: FlowSource>(&mut self, source: &mut S, index: u32, name: String) {
        source.detach(index);
        if self.selection.is_named(&name) {
            warn!(iface = %name, ifindex = index, "Interface named with --iface was deleted (or renamed); its traffic is not counted until it comes back (it is attached again then).");
            self.gone.insert(name);
        }
    }
}
