//! Idle timeouts as a list of connections ordered by last activity.
//!
//! Every connection under the reactor's idle timeout sits in one doubly linked list whose
//! links live inside the connections themselves (two slab keys, 8 bytes). (One whose
//! service gave it a timeout of its own is checked by a timer instead: the list assumes
//! one timeout for all.) Activity moves a
//! connection to the back, in O(1) and without allocating; so the front is always the
//! connection that has been quiet the longest, and the loop needs only one deadline
//! for all of them: `front.last_active + timeout`. Compared with one timer entry per
//! connection this saves memory (10,000 idle connections cost 80 KB of links) and
//! makes "is anyone idle?" a single comparison.
//!
//! ```text
//!   head -> [conn 7] <-> [conn 2] <-> [conn 9] <- tail
//!           quiet longest              active most recently
//! ```

use slab::Slab;

/// "No connection": the end of the list.
pub(crate) const NIL: u32 = u32::MAX;

/// In `prev`: the connection is not in the list at all (no slab key is this large).
const UNLINKED: u32 = u32::MAX - 1;

/// A connection's place in the list: 8 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Links {
    /// The connection before it, [`NIL`] at the front, [`UNLINKED`] when not listed.
    prev: u32,
    next: u32,
}

impl Links {
    fn linked(&self) -> bool {
        self.prev != UNLINKED
    }
}

impl Default for Links {
    fn default() -> Self {
        Links {
            prev: UNLINKED,
            next: NIL,
        }
    }
}

/// Something that carries [`Links`] (a connection; plain `Links` in tests).
pub(crate) trait Linked {
    fn links(&mut self) -> &mut Links;
}

impl Linked for Links {
    fn links(&mut self) -> &mut Links {
        self
    }
}

/// The list's two ends. The links are in the slab's entries.
#[derive(Debug)]
pub(crate) struct IdleList {
    head: u32,
    tail: u32,
}

impl Default for IdleList {
    fn default() -> Self {
        IdleList {
            head: NIL,
            tail: NIL,
        }
    }
}

impl IdleList {
    /// The key of the connection quiet the longest.
    pub(crate) fn front(&self) -> Option<usize> {
        (self.head != NIL).then_some(self.head as usize)
    }

    /// Appends `key` at the back (most recently active).
    pub(crate) fn push_back<T: Linked>(&mut self, slab: &mut Slab<T>, key: usize) {
        let key32 = key as u32;
        let old_tail = self.tail;
        *slab[key].links() = Links {
            prev: old_tail,
            next: NIL,
        };
        if old_tail == NIL {
            self.head = key32;
        } else {
            slab[old_tail as usize].links().next = key32;
        }
        self.tail = key32;
    }

    /// Takes `key` out of the list (no-op if it is not in it).
    pub(crate) fn unlink<T: Linked>(&mut self, slab: &mut Slab<T>, key: usize) {
        let links = *slab[key].links();
        if !links.linked() {
            return;
        }
        let Links { prev, next } = links;
        match prev {
            NIL => self.head = next,
            prev => slab[prev as usize].links().next = next,
        }
        match next {
            NIL => self.tail = prev,
            next => slab[next as usize].links().prev = prev,
        }
        *slab[key].links() = Links::default();
    }

    /// Moves `key` to the back, if it is in the list.
    pub(crate) fn touch<T: Linked>(&mut self, slab: &mut Slab<T>, key: usize) {
        if self.tail == key as u32 || !slab[key].links().linked() {
            return;
        }
        self.unlink(slab, key);
        self.push_back(slab, key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(list: &IdleList, slab: &mut Slab<Links>) -> Vec<usize> {
        let mut keys = Vec::new();
        let mut at = list.head;
        while at != NIL {
            keys.push(at as usize);
            at = slab[at as usize].next;
        }
        keys
    }

    fn setup(n: usize) -> (IdleList, Slab<Links>) {
        let mut slab = Slab::new();
        let mut list = IdleList::default();
        for _ in 0..n {
            let key = slab.insert(Links::default());
            list.push_back(&mut slab, key);
        }
        (list, slab)
    }

    #[test]
    fn keeps_insertion_order() {
        let (list, mut slab) = setup(3);
        assert_eq!(order(&list, &mut slab), [0, 1, 2]);
        assert_eq!(list.front(), Some(0));
    }

    #[test]
    fn touch_moves_to_the_back() {
        let (mut list, mut slab) = setup(3);
        list.touch(&mut slab, 0);
        assert_eq!(order(&list, &mut slab), [1, 2, 0]);
        list.touch(&mut slab, 2);
        assert_eq!(order(&list, &mut slab), [1, 0, 2]);
        list.touch(&mut slab, 2);
        assert_eq!(order(&list, &mut slab), [1, 0, 2]);
    }

    #[test]
    fn unlink_head_middle_tail_and_twice() {
        let (mut list, mut slab) = setup(4);
        list.unlink(&mut slab, 1);
        assert_eq!(order(&list, &mut slab), [0, 2, 3]);
        list.unlink(&mut slab, 0);
        list.unlink(&mut slab, 0);
        assert_eq!(order(&list, &mut slab), [2, 3]);
        list.unlink(&mut slab, 3);
        assert_eq!(order(&list, &mut slab), [2]);
        list.unlink(&mut slab, 2);
        assert_eq!(list.front(), None);
        list.push_back(&mut slab, 1);
        assert_eq!(order(&list, &mut slab), [1]);
    }

    #[test]
    fn touching_an_unlinked_entry_leaves_it_out() {
        let (mut list, mut slab) = setup(2);
        list.unlink(&mut slab, 0);
        list.touch(&mut slab, 0);
        assert_eq!(order(&list, &mut slab), [1]);
    }
}
