//! Work split into fixed chunks of whole groups, run on rayon's threads with the partial
//! results combined in order, so results do not depend on the number of threads.

use rayon::prelude::*;

/// Elements per work item; items never straddle a group boundary unless they hold whole groups.
pub(super) const CHUNK: usize = 1 << 16;
/// Tensors smaller than this are processed on the calling thread.
pub(super) const PARALLEL_MIN: usize = 1 << 18;

#[derive(Clone, Copy, Debug)]
pub(super) struct Item {
    pub(super) start: usize,
    pub(super) end: usize,
}

impl Item {
    /// `(start, end, group)` for each group-piece in the item.
    pub(super) fn segments(self, group_len: usize) -> impl Iterator<Item = (usize, usize, usize)> {
        let end = self.end;
        let mut s = self.start;
        std::iter::from_fn(move || {
            (s < end).then(|| {
                let group = s / group_len;
                let e = ((group + 1) * group_len).min(end);
                let seg = (s, e, group);
                s = e;
                seg
            })
        })
    }
}

/// Each group piece of `item` with its part of the item's output `piece`:
/// `(start, end, group, part)`.
pub(super) fn parts<O>(
    item: Item,
    group_len: usize,
    mut piece: &mut [O],
) -> impl Iterator<Item = (usize, usize, usize, &mut [O])> {
    item.segments(group_len).map(move |(start, end, group)| {
        let (part, tail) = std::mem::take(&mut piece).split_at_mut(end - start);
        piece = tail;
        (start, end, group, part)
    })
}

pub(super) fn items(len: usize, group_len: usize) -> Vec<Item> {
    let step = if group_len >= CHUNK {
        CHUNK
    } else {
        (CHUNK / group_len) * group_len
    };
    let mut out = Vec::with_capacity(len / step + 1);
    let mut start = 0;
    while start < len {
        let group_end = if group_len >= CHUNK {
            (start / group_len + 1) * group_len
        } else {
            len
        };
        let end = (start + step).min(group_end).min(len);
        out.push(Item { start, end });
        start = end;
    }
    out
}

/// Runs `f` on every item, on all threads for large tensors; results are in item order.
pub(super) fn map_items<R: Send>(items: &[Item], f: impl Fn(&Item) -> R + Sync + Send) -> Vec<R> {
    let len = items.last().map_or(0, |i| i.end);
    if len >= PARALLEL_MIN {
        items.par_iter().map(f).collect()
    } else {
        items.iter().map(f).collect()
    }
}

/// Runs `f` on every item with its piece of the output.
pub(super) fn run<O: Send>(
    items: &[Item],
    pieces: &mut [&mut [O]],
    f: impl Fn(&Item, &mut [O]) + Sync + Send,
) {
    let len = items.last().map_or(0, |i| i.end);
    if len >= PARALLEL_MIN {
        items
            .par_iter()
            .zip(pieces.par_iter_mut())
            .for_each(|(item, piece)| f(item, piece));
    } else {
        items
            .iter()
            .zip(pieces.iter_mut())
            .for_each(|(item, piece)| f(item, piece));
    }
}

pub(super) fn split_mut<'a, O>(mut data: &'a mut [O], items: &[Item]) -> Vec<&'a mut [O]> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let (head, tail) = std::mem::take(&mut data).split_at_mut(item.end - item.start);
        out.push(head);
        data = tail;
    }
    out
}
