//! Lease math, kept pure so it is tested under tokio's paused clock.
//!
//! The store expires a slot `ttl` after it *stored* the last write. mend
//! cannot see that instant, but it knows when it *sent* the write, which is
//! earlier. So the local deadline is `sent + ttl - guard`: it never
//! outlives the server's lease, whatever the round trip took, and the
//! guard absorbs timer lateness and a small difference in clock rate. Only
//! durations on the monotonic clock are used: a wall clock that is off by
//! hours changes nothing here.

use std::time::Duration;

use tokio::time::Instant;

/// A budget's lease settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTerms {
    pub ttl: Duration,
    pub renew_every: Duration,
}

impl LeaseTerms {
    /// What is kept back from the ttl: a tenth, within [10 ms, 5 s].
    pub fn guard(&self) -> Duration {
        (self.ttl / 10).clamp(Duration::from_millis(10), Duration::from_secs(5))
    }

    /// The local deadline of a write sent at `sent`.
    pub fn deadline(&self, sent: Instant) -> Instant {
        sent + self.ttl.saturating_sub(self.guard())
    }
}

/// Why a hold ended without a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lost {
    /// The deadline passed before a renewal got through.
    Expired,
    /// The store refused the renewal: the slot is no longer ours.
    Refused,
}

impl Lost {
    pub fn as_str(self) -> &'static str {
        match self {
            Lost::Expired => "expired",
            Lost::Refused => "refused",
        }
    }
}

/// A held lease, driven by the outcomes of renewals.
#[derive(Debug, Clone, Copy)]
pub struct Lease {
    terms: LeaseTerms,
    deadline: Instant,
    last_sent: Instant,
    lost: Option<Lost>,
}

impl Lease {
    /// A lease whose granting write was sent at `sent`.
    pub fn new(terms: LeaseTerms, sent: Instant) -> Lease {
        Lease {
            terms,
            deadline: terms.deadline(sent),
            last_sent: sent,
            lost: None,
        }
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// When to send the next renewal.
    pub fn next_renewal(&self) -> Instant {
        self.last_sent + self.terms.renew_every
    }

    /// A renewal sent at `sent` was accepted. A lease already lost stays
    /// lost: the holder may already have stopped acting.
    pub fn renewed(&mut self, sent: Instant) {
        if self.lost.is_none() && sent <= self.deadline {
            self.deadline = self.deadline.max(self.terms.deadline(sent));
            self.last_sent = sent;
        }
    }

    /// A renewal failed to get through (timeout, no connection): retry
    /// soon, for as long as the deadline allows.
    pub fn unreachable(&mut self, now: Instant) {
        let at = now.min(self.deadline);
        self.last_sent = at.checked_sub(self.terms.renew_every / 2).unwrap_or(at);
    }

    pub fn refused(&mut self) {
        self.lost.get_or_insert(Lost::Refused);
    }

    /// Whether (and why) the lease is over at `now`.
    pub fn lost(&mut self, now: Instant) -> Option<Lost> {
        if self.lost.is_none() && now >= self.deadline {
            self.lost = Some(Lost::Expired);
        }
        self.lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms() -> LeaseTerms {
        LeaseTerms {
            ttl: Duration::from_secs(30),
            renew_every: Duration::from_secs(10),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_local_deadline_is_inside_the_servers_lease() {
        let t = terms();
        let sent = Instant::now();
        assert_eq!(t.guard(), Duration::from_secs(3));
        assert_eq!(t.deadline(sent), sent + Duration::from_secs(27));
        let tiny = LeaseTerms {
            ttl: Duration::from_millis(50),
            renew_every: Duration::from_millis(10),
        };
        assert_eq!(tiny.guard(), Duration::from_millis(10));
    }

    #[tokio::test(start_paused = true)]
    async fn renewals_move_the_deadline_from_when_they_were_sent() {
        let mut l = Lease::new(terms(), Instant::now());
        let t0 = Instant::now();
        assert_eq!(l.next_renewal(), t0 + Duration::from_secs(10));
        tokio::time::advance(Duration::from_secs(10)).await;
        let sent = Instant::now();
        // The reply took 2 s: the deadline counts from the send.
        tokio::time::advance(Duration::from_secs(2)).await;
        l.renewed(sent);
        assert_eq!(l.deadline(), sent + Duration::from_secs(27));
        assert_eq!(l.next_renewal(), sent + Duration::from_secs(10));
        assert_eq!(l.lost(Instant::now()), None);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreachable_store_ends_the_hold_at_the_deadline() {
        let t0 = Instant::now();
        let mut l = Lease::new(terms(), t0);
        for _ in 0..5 {
            tokio::time::advance(Duration::from_secs(5)).await;
            l.unreachable(Instant::now());
            assert!(l.next_renewal() <= Instant::now() + Duration::from_secs(5));
        }
        assert_eq!(l.lost(t0 + Duration::from_millis(26_999)), None);
        assert_eq!(l.lost(t0 + Duration::from_secs(27)), Some(Lost::Expired));
        // A late acknowledgement cannot revive it.
        l.renewed(t0 + Duration::from_secs(26));
        assert_eq!(l.lost(t0 + Duration::from_secs(28)), Some(Lost::Expired));
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_is_final() {
        let t0 = Instant::now();
        let mut l = Lease::new(terms(), t0);
        l.refused();
        l.renewed(t0 + Duration::from_secs(1));
        assert_eq!(l.lost(t0 + Duration::from_secs(1)), Some(Lost::Refused));
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_sent_after_the_deadline_does_not_count() {
        let t0 = Instant::now();
        let mut l = Lease::new(terms(), t0);
        l.renewed(t0 + Duration::from_secs(28));
        assert_eq!(l.lost(t0 + Duration::from_secs(28)), Some(Lost::Expired));
    }
}
