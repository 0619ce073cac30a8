//! Which run ids the database may hold, without reading it: a Bloom filter of every run
//! id stored before this process started and every run it has accepted since.
//!
//! A run id must be new everywhere, so a run the registry has not seen in memory used to
//! cost a read of the database: one trip to a blocking thread per frame that starts runs,
//! on a reader whose page cache every commit invalidates (at 10 spans/s, a twelfth of the
//! sidecar's CPU). The filter answers "certainly not stored" for almost every new id;
//! only its rare false positives, and ids while it is being (re)built, are still read.
//!
//! It is built from the database on a thread of its own (`SELECT run_id FROM runs`) while
//! accepted runs are added as they come, and the two are united: a run committed before
//! the scan is in the scan, any later one was added when it was accepted. When more ids
//! were added than it was sized for, it starts over at twice the size and is rebuilt the
//! same way (a scan per doubling: amortised, a constant per run).

use std::hash::{BuildHasher, Hasher};

/// Ids the smallest filter is sized for (8 KiB).
const MIN_CAPACITY: usize = 8 * 1024;

/// Bits per id of capacity: a full filter answers "maybe" for about 2 % of new ids (a
/// database read each), a half-full one for 0.4 %.
const BITS_PER_ID: usize = 8;

/// Bits set and tested per id.
const PROBES: u32 = 6;

/// The filter's bits, and how many ids they were sized for.
#[derive(Debug, Clone, PartialEq)]
pub struct RunIdFilter {
    words: Vec<u64>,
    capacity: usize,
    /// Ids added (duplicates counted again: the estimate errs towards growing).
    added: usize,
}

impl RunIdFilter {
    /// An empty filter for at least `ids` ids.
    pub fn for_ids(ids: usize) -> Self {
        let capacity = ids.max(MIN_CAPACITY).next_power_of_two();
        Self {
            words: vec![0; capacity * BITS_PER_ID / 64],
            capacity,
            added: 0,
        }
    }

    /// Ids it was sized for.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether more ids were added than it was sized for.
    pub fn is_full(&self) -> bool {
        self.added > self.capacity
    }

    /// Adds `id`.
    pub fn insert(&mut self, id: &str) {
        let bits = self.words.len() as u64 * 64;
        for bit in probes(id, bits) {
            self.words[(bit / 64) as usize] |= 1 << (bit % 64);
        }
        self.added += 1;
    }

    /// Whether `id` may have been added (`false`: it certainly was not).
    pub fn may_contain(&self, id: &str) -> bool {
        let bits = self.words.len() as u64 * 64;
        probes(id, bits).all(|bit| self.words[(bit / 64) as usize] & (1 << (bit % 64)) != 0)
    }

    /// Adds every id of `other`, a filter of the same size; false (and nothing changed)
    /// when the sizes differ.
    pub fn unite(&mut self, other: &RunIdFilter) -> bool {
        if other.words.len() != self.words.len() {
            return false;
        }
        for (mine, theirs) in self.words.iter_mut().zip(&other.words) {
            *mine |= theirs;
        }
        self.added += other.added;
        true
    }
}

/// The bits of `id` in a filter of `bits` bits (a power of two): double hashing of two
/// independent hashes.
fn probes(id: &str, bits: u64) -> impl Iterator<Item = u64> {
    let hash = |salt: u8| {
        // Fixed keys: the same id hashes the same in the scan and in the registry.
        let mut h =
            std::hash::BuildHasherDefault::<std::hash::DefaultHasher>::default().build_hasher();
        h.write_u8(salt);
        h.write(id.as_bytes());
        h.finish()
    };
    let (first, step) = (hash(0), hash(1) | 1);
    (0..u64::from(PROBES)).map(move |i| first.wrapping_add(i.wrapping_mul(step)) & (bits - 1))
}

/// The registry's view of the stored run ids: the filter once it holds the database's
/// ids, and whether a build is wanted or under way.
#[derive(Debug)]
pub struct StoredRuns {
    filter: RunIdFilter,
    /// Whether the filter holds every id of the database (else every unseen id is read).
    complete: bool,
    /// Bumped when the filter starts over: a build for an older one is thrown away.
    generation: u64,
    /// A build is wanted and nobody has taken it yet ([`StoredRuns::take_build`]).
    build_wanted: bool,
}

impl Default for StoredRuns {
    fn default() -> Self {
        Self::new()
    }
}

/// A build of the filter to run off the registry's lock: scan the database into
/// `RunIdFilter::for_ids(capacity)`, then hand it to [`StoredRuns::finish_build`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Build {
    /// Ids to size the scan's filter for (the same size as the registry's).
    pub capacity: usize,
    /// Which filter it is for.
    pub generation: u64,
}

impl StoredRuns {
    /// Not built yet: every id may be stored, until a build is finished.
    pub fn new() -> Self {
        Self {
            filter: RunIdFilter::for_ids(0),
            complete: false,
            generation: 0,
            build_wanted: true,
        }
    }

    /// Whether the database may hold run `id`.
    pub fn may_hold(&self, id: &str) -> bool {
        !self.complete || self.filter.may_contain(id)
    }

    /// Notes an accepted run (it will be stored). When the filter is full it starts over,
    /// twice the size, wants a build, and says so (true): the caller then adds the runs it
    /// holds in memory ([`StoredRuns::add`]), since those accepted shortly before may not
    /// be committed when the build reads the database.
    #[must_use]
    pub fn accepted(&mut self, id: &str) -> bool {
        self.filter.insert(id);
        if !self.filter.is_full() {
            return false;
        }
        self.filter = RunIdFilter::for_ids(self.filter.capacity() * 2);
        self.complete = false;
        self.generation += 1;
        self.build_wanted = true;
        self.filter.insert(id);
        true
    }

    /// Adds a run id the registry knows (after [`StoredRuns::accepted`] started over).
    pub fn add(&mut self, id: &str) {
        self.filter.insert(id);
    }

    /// Whether a build is wanted and not yet taken.
    pub fn build_wanted(&self) -> bool {
        self.build_wanted
    }

    /// The build to run, if one is wanted and not already taken. Size it for `stored`,
    /// the runs the database holds, when that is known: a filter too small for them starts
    /// over, and the caller adds the runs it holds in memory (as after
    /// [`StoredRuns::accepted`]).
    pub fn take_build(&mut self, stored: Option<usize>) -> Option<Build> {
        if !std::mem::take(&mut self.build_wanted) {
            return None;
        }
        if let Some(stored) = stored.filter(|&n| n * 3 / 2 > self.filter.capacity()) {
            // Room for the stored ids and half as many again before the next build.
            self.filter = RunIdFilter::for_ids(stored * 3 / 2);
            self.generation += 1;
        }
        Some(Build {
            capacity: self.filter.capacity(),
            generation: self.generation,
        })
    }

    /// Takes in a finished build: from now on an id outside the filter is certainly not
    /// stored. A build for a filter that has since started over is dropped (false: that
    /// one wants its own).
    pub fn finish_build(&mut self, build: Build, scanned: &RunIdFilter) -> bool {
        if build.generation != self.generation || !self.filter.unite(scanned) {
            return false;
        }
        // Full already (the database held more than it was sized for): the next accepted
        // run starts it over.
        self.complete = true;
        true
    }

    /// A build that failed (the database could not be read): try again on the next
    /// accepted run; meanwhile every unseen id is read.
    pub fn build_failed(&mut self, build: Build) {
        if build.generation == self.generation {
            self.build_wanted = true;
        }
    }

    /// Whether the filter holds every stored id.
    #[cfg(test)]
    pub fn is_complete(&self) -> bool {
        self.complete
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_added_id_is_always_found_and_few_others_are() {
        let mut f = RunIdFilter::for_ids(MIN_CAPACITY);
        for i in 0..MIN_CAPACITY {
            f.insert(&format!("0123456789abcdef-{i}"));
        }
        assert!(!f.is_full());
        assert!((0..MIN_CAPACITY).all(|i| f.may_contain(&format!("0123456789abcdef-{i}"))));
        let false_positives = (0..100_000)
            .filter(|i| f.may_contain(&format!("fedcba9876543210-{i}")))
            .count();
        // 8 bits and 6 probes per id, full: about 2 %.
        assert!(
            false_positives < 4_000,
            "{false_positives} of 100,000 new ids looked stored"
        );
    }

    #[test]
    fn filters_of_one_size_unite_and_of_two_sizes_do_not() {
        let mut a = RunIdFilter::for_ids(0);
        let mut b = RunIdFilter::for_ids(0);
        a.insert("a");
        b.insert("b");
        assert!(a.unite(&b));
        assert!(a.may_contain("a") && a.may_contain("b"));
        let before = a.clone();
        assert!(!a.unite(&RunIdFilter::for_ids(MIN_CAPACITY * 4)));
        assert_eq!(a, before);
    }

    /// A build: what the database holds, scanned into a filter of the build's size.
    fn scan(build: Build, stored: &[&str]) -> RunIdFilter {
        let mut f = RunIdFilter::for_ids(build.capacity);
        for id in stored {
            f.insert(id);
        }
        f
    }

    #[test]
    fn nothing_is_certainly_new_until_the_database_was_scanned() {
        let mut runs = StoredRuns::new();
        assert!(runs.may_hold("anything"), "not built yet");
        let build = runs.take_build(Some(2)).expect("a first build is wanted");
        assert_eq!(runs.take_build(None), None, "taken once");
        // Accepted while the scan runs (perhaps committed after it read): kept.
        assert!(!runs.accepted("during"));
        assert!(runs.finish_build(build, &scan(build, &["before-1", "before-2"])));
        assert!(runs.is_complete());
        for id in ["before-1", "before-2", "during"] {
            assert!(runs.may_hold(id), "{id}");
        }
        assert!(!runs.accepted("after"));
        assert!(runs.may_hold("after"));
        assert!(!runs.may_hold("never-stored-0123456789"));
    }

    #[test]
    fn a_large_database_sizes_the_filter_and_a_full_one_starts_over() {
        let mut runs = StoredRuns::new();
        let build = runs.take_build(Some(100_000)).unwrap();
        assert!(build.capacity >= 150_000, "{build:?}");
        let stored: Vec<String> = (0..100_000).map(|i| format!("s-{i}")).collect();
        let refs: Vec<&str> = stored.iter().map(String::as_str).collect();
        assert!(runs.finish_build(build, &scan(build, &refs)));
        // More accepted runs than it has room for: it starts over and wants a build,
        // and until that is done every id may be stored.
        let mut i = 0;
        while !runs.accepted(&format!("new-{i}")) {
            i += 1;
        }
        assert!(i > 100_000, "started over after {i} more runs");
        assert!(!runs.is_complete());
        assert!(runs.may_hold("never-stored"));
        let next = runs
            .take_build(None)
            .expect("the bigger filter wants a build");
        assert_eq!(next.capacity, build.capacity * 2);
        // The first build's answer, late, does not fit the new filter.
        assert!(!runs.finish_build(build, &scan(build, &refs)));
        assert!(runs.finish_build(next, &scan(next, &refs)));
        // The run that filled it is in the new filter; so is any the registry adds back.
        runs.add("new-7");
        for id in ["s-7".to_owned(), format!("new-{i}"), "new-7".to_owned()] {
            assert!(runs.may_hold(&id), "{id}");
        }
    }

    #[test]
    fn a_failed_build_is_wanted_again() {
        let mut runs = StoredRuns::new();
        let build = runs.take_build(None).unwrap();
        runs.build_failed(build);
        assert_eq!(runs.take_build(None), Some(build));
    }
}
