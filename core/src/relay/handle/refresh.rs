//! Refresh: extend an allocation's lifetime, or end it with LIFETIME 0. See RFC 8656 §8.

use std::time::Duration;

use rand::RngCore;

use super::super::table::{Slot, Timer};
use super::super::{EndReason, Event, Now, Server, Stage};
use super::{Answer, Failure, parse_lifetime};
use crate::stun::attr::{self, Family};
use crate::stun::{Class, ErrorCode, Message};

/// A Refresh request, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RefreshRequest {
    /// REQUESTED-ADDRESS-FAMILY: the family the client means to refresh (dual allocations
    /// refresh both anyway).
    family: Option<Family>,
    /// The client's LIFETIME wish; 0 deletes the allocation.
    lifetime: Option<u32>,
}

impl RefreshRequest {
    fn parse(msg: &Message<'_>) -> Result<Self, Failure> {
        let family = msg
            .get(attr::REQUESTED_ADDRESS_FAMILY)
            .map(|v| {
                attr::decode_family(attr::REQUESTED_ADDRESS_FAMILY, v)
                    .map_err(|_| Failure::bad_request("malformed REQUESTED-ADDRESS-FAMILY"))
            })
            .transpose()?;
        let lifetime = parse_lifetime(msg)?;
        Ok(Self { family, lifetime })
    }

    /// Returns true when `msg` asks to delete the allocation (a well-formed LIFETIME of 0),
    /// whatever else is wrong with it.
    fn releases(msg: &Message<'_>) -> bool {
        msg.get(attr::LIFETIME)
            .is_some_and(|v| attr::decode_u32(attr::LIFETIME, v) == Ok(0))
    }
}

impl<R: RngCore> Server<R> {
    /// Handles a Refresh on an active allocation.
    pub(super) fn handle_refresh(
        &mut self,
        slot: Slot,
        msg: &Message<'_>,
        now: Now,
    ) -> Result<Answer, Failure> {
        // A release is not decided again; anything else is, before the request's own errors.
        let parsed = RefreshRequest::parse(msg);
        if !RefreshRequest::releases(msg) {
            self.recheck(slot, Stage::Refresh, now)?;
        }
        let req = parsed?;
        if let Some(f) = req.family
            && self.alloc(slot).is_some_and(|a| a.relayed_for(f).is_none())
        {
            return Err(Failure::new(ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH));
        }
        let lifetime = if req.lifetime == Some(0) {
            0
        } else {
            self.granted_lifetime(req.lifetime)
        };
        let mut b = self.response(msg, Class::Success);
        b.add_u32(attr::LIFETIME, lifetime);
        if lifetime == 0 {
            self.delete_allocation(slot, EndReason::Released, now);
        } else {
            let expires = now.mono + Duration::from_secs(u64::from(lifetime));
            let a = self
                .alloc_mut(slot)
                .ok_or(Failure::new(ErrorCode::ALLOCATION_MISMATCH))?;
            a.expires = expires;
            a.lifetime_secs = lifetime;
            let id = a.id;
            self.timers.add(expires, Timer::Allocation(slot));
            self.events.push_back(Event::AllocationRefreshed {
                id,
                at: now.wall,
                lifetime: Duration::from_secs(u64::from(lifetime)),
            });
        }
        Ok(Answer::Respond(b))
    }
}
