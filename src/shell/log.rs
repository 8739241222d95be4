//! Log lines for core events. Addresses go through [`Pii`], user ids through [`Escaped`];
//! nothing of a payload is logged. Policy refusals are counted for the summary line
//! ([`Refusals`]) and logged one by one only at debug level.

use super::refusals::Refusals;
use crate::pii::{Escaped, Pii};
use crate::relay::Event;

/// Logs one core event at a fitting level.
pub(super) fn event(ev: &Event, refusals: &Refusals) {
    match ev {
        Event::AllocationCreated {
            id,
            transport,
            client,
            user,
            relayed,
            lifetime,
            ..
        } => {
            let relayed: Vec<String> = relayed.iter().map(|r| r.to_string()).collect();
            tracing::info!(
                target: "eeaturn::relay",
                allocation = %id,
                transport = transport.name(),
                client = %Pii(client),
                user = %Escaped(user),
                relayed = %relayed.join(","),
                lifetime_s = lifetime.as_secs(),
                "allocation created"
            );
        }
        Event::AllocationRefreshed { id, lifetime, .. } => {
            tracing::debug!(target: "eeaturn::relay", allocation = %id, lifetime_s = lifetime.as_secs(), "allocation refreshed");
        }
        Event::AllocationEnded {
            id,
            reason,
            traffic,
            ..
        } => {
            tracing::info!(
                target: "eeaturn::relay",
                allocation = %id,
                reason = reason.name(),
                packets_to_peer = traffic.packets_to_peer,
                bytes_to_peer = traffic.bytes_to_peer,
                packets_to_client = traffic.packets_to_client,
                bytes_to_client = traffic.bytes_to_client,
                "allocation ended"
            );
        }
        Event::PermissionAllowed { id, peer, rule, .. } => {
            tracing::debug!(target: "eeaturn::policy", allocation = %id, peer = %Pii(peer), rule = rule.id(), "permission allowed");
        }
        Event::ChannelBound {
            id, channel, peer, ..
        } => {
            tracing::debug!(target: "eeaturn::relay", allocation = %id, channel = format_args!("0x{channel:04x}"), peer = %Pii(peer), "channel bound");
        }
        Event::Denied {
            id,
            subject,
            addr,
            rule,
            ..
        } => {
            refusals.note(subject.name(), rule.id(), 1, super::now().mono);
            let allocation = id.map_or_else(|| "-".to_owned(), |i| i.to_string());
            tracing::debug!(
                target: "eeaturn::policy",
                allocation = %allocation,
                subject = %subject.name(),
                addr = %Pii(addr),
                rule = rule.id(),
                "denied by policy"
            );
        }
    }
}
