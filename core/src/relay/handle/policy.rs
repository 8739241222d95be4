//! Residency decisions for requests: admitting or refusing a client or peer, and deciding
//! again after the policy was replaced.

use std::net::IpAddr;

use rand::RngCore;

use super::super::table::Slot;
use super::super::{AllocationId, EndReason, Event, Now, Server, Stage};

/// Who asked: the allocation (if one exists yet) and the request or step.
pub(crate) type Asked = (Option<AllocationId>, Stage);
use super::Failure;
use crate::policy::{Decision, Facts, Rule, Subject};

impl<R: RngCore> Server<R> {
    /// Admits `addr` as `subject` under `decision`: returns the allowing rule and its facts, or
    /// records the refusal ([`Self::deny`]) and returns the 403 to answer.
    pub(super) fn admit(
        &mut self,
        id: Asked,
        subject: Subject,
        addr: IpAddr,
        decision: Decision,
        now: Now,
    ) -> Result<(Rule, Facts), Failure> {
        match decision {
            Decision::Allow { rule, facts } => Ok((rule, facts)),
            Decision::Deny { rule, facts } => Err(self.refuse(id, subject, addr, rule, facts, now)),
        }
    }

    /// Records a refusal of `addr` by `rule` and returns the 403 to answer.
    pub(super) fn refuse(
        &mut self,
        id: Asked,
        subject: Subject,
        addr: IpAddr,
        rule: Rule,
        facts: Facts,
        now: Now,
    ) -> Failure {
        self.deny(id, subject, addr, rule, facts, now);
        Failure::forbidden(subject, rule)
    }

    /// Counts a refusal and reports it as [`Event::Denied`].
    pub(crate) fn deny(
        &mut self,
        (id, stage): Asked,
        subject: Subject,
        addr: IpAddr,
        rule: Rule,
        facts: Facts,
        now: Now,
    ) {
        *self
            .stats
            .denials
            .entry((subject.name(), rule.id()))
            .or_default() += 1;
        *self
            .stats
            .denials_by_country
            .entry((subject.name(), facts.country))
            .or_default() += 1;
        self.events.push_back(Event::Denied {
            id,
            at: now.wall,
            stage,
            subject,
            addr,
            rule,
            facts,
        });
    }

    /// Decides again, under the policy now in force, the client and every permission of an
    /// allocation that an earlier policy allowed; refused permissions are removed with their
    /// channels. When the client itself is now refused, the allocation ends
    /// (`policy-changed`) and the 403 to answer is returned.
    pub(super) fn recheck(&mut self, slot: Slot, stage: Stage, now: Now) -> Result<(), Failure> {
        let generation = self.policy_generation;
        let Some(a) = self.alloc(slot) else {
            return Ok(());
        };
        if a.policy_generation == generation {
            return Ok(());
        }
        let id = a.id;
        let client = a.five_tuple.client.ip();
        let stale: Vec<IpAddr> = a
            .permissions
            .iter()
            .filter(|p| p.generation != generation)
            .map(|p| p.ip)
            .collect();
        let decision = self.policy.check_client(client);
        let asked = (Some(id), stage.clone());
        if let Err(f) = self.admit(asked, Subject::Client, client, decision, now) {
            self.delete_allocation(slot, EndReason::PolicyChanged, now);
            return Err(f);
        }
        let mut refused = Vec::new();
        for ip in stale {
            if let Decision::Deny { rule, facts } = self.policy.check_peer(ip, &self.cfg.relay) {
                self.deny(
                    (Some(id), stage.clone()),
                    Subject::Peer,
                    ip,
                    rule,
                    facts,
                    now,
                );
                refused.push(ip);
            }
        }
        if let Some(a) = self.alloc_mut(slot) {
            a.policy_generation = generation;
            for p in &mut a.permissions {
                p.generation = generation;
            }
            a.permissions.retain(|p| !refused.contains(&p.ip));
            a.channels.retain(|c| !refused.contains(&c.peer.ip()));
        }
        Ok(())
    }
}
