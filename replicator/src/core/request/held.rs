//! The activity-log references one write holds (docs/architecture.md §4.6).

/// A write's activity-log references: always a run of consecutive extents, the first ones of
/// its range (`Engine::al_acquire` takes them in order, continuing after the last one held, and
/// gives them all back when it must wait for a slot). Two numbers instead of a `Vec`: one
/// allocation less per write, freed only at the barrier ack, which had made it a glibc bin
/// allocation (3 % of the Primary's user time under 4 KiB writes).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeldExtents {
    first: u64,
    count: u64,
}

impl HeldExtents {
    /// A run of `count` extents from `first` (tests).
    #[cfg(test)]
    pub(crate) fn run(first: u64, count: u64) -> Self {
        HeldExtents { first, count }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The extent after the last one held; `None` when nothing is held.
    pub(crate) fn next(&self) -> Option<u64> {
        (self.count > 0).then(|| self.first + self.count)
    }

    /// One more reference: `ext` must follow the run (or start it).
    pub(crate) fn push(&mut self, ext: u64) {
        debug_assert!(
            self.is_empty() || Some(ext) == self.next(),
            "extent {ext} does not follow the run {self:?}"
        );
        if self.is_empty() {
            self.first = ext;
        }
        self.count += 1;
    }

    /// The extents, leaving the run empty.
    pub(crate) fn take(&mut self) -> Self {
        std::mem::take(self)
    }

    pub(crate) fn iter(&self) -> std::ops::Range<u64> {
        self.first..self.first + self.count
    }
}

impl IntoIterator for HeldExtents {
    type Item = u64;
    type IntoIter = std::ops::Range<u64>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_grows_from_its_first_extent() {
        let mut h = HeldExtents::default();
        assert!(h.is_empty() && h.next().is_none());
        h.push(7);
        h.push(8);
        assert_eq!(h.next(), Some(9));
        assert_eq!(h.iter().collect::<Vec<_>>(), vec![7, 8]);
        let t = h.take();
        assert!(h.is_empty());
        assert_eq!(t, HeldExtents::run(7, 2));
        assert_eq!(t.into_iter().collect::<Vec<_>>(), vec![7, 8]);
    }
}
