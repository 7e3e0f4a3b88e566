//! The exact programme behind [`super::allocate`]: after each layer, every Pareto-optimal
//! (total cost, total objective) pair of the layers so far, with back-pointers to follow the
//! best one back to its widths.
//!
//! The back-pointers are what costs memory: 5 bytes per frontier point per layer, and for many
//! layers of equal size the frontier grows with the layers, so the memory with their square.
//! Past a limit of points kept at once, the layers are split in halves instead (Hirschberg's
//! trick): the two halves' frontiers are swept without back-pointers, the best split of the
//! capacity between them is found with two pointers, and each half is solved alone within its
//! share. That is still exact (a point of a frontier is the least objective at its cost) and
//! holds one frontier at a time; it costs the sweeps again at each level of halving.

use super::{Budget, LayerCurve, cost};

/// A point of the frontier: total cost and objective, and how it was reached.
#[derive(Clone, Copy)]
struct Point {
    cost: u64,
    objective: f64,
    /// Index of the point of the previous frontier it extends.
    from: u32,
    /// The option taken for this layer.
    option: u32,
}

/// What the back-track needs of one layer's frontier, 5 bytes a point: the point of the
/// previous frontier each extends, and the option it takes.
type Back = (Vec<u32>, Vec<u8>);

/// The units the objective is searched in: the largest sensitivity and the largest error (a
/// positive scale, so the same choice); sensitivities of 1e308 times errors would overflow to
/// infinity and every choice would tie.
#[derive(Clone, Copy)]
struct Units {
    sensitivity: f64,
    error: f64,
}

impl Units {
    fn of(layers: &[LayerCurve]) -> Self {
        let (s_max, e_max) = layers.iter().fold((0.0f64, 0.0f64), |(s, e), l| {
            let e_l = l.options.iter().fold(0.0f64, |m, o| m.max(o.error));
            (s.max(l.sensitivity), e.max(e_l))
        });
        Units {
            sensitivity: if s_max > 0.0 { s_max } else { 1.0 },
            error: if e_max > 0.0 { e_max } else { 1.0 },
        }
    }
}

/// The option (index into its candidates) of each layer that minimises the objective within
/// `capacity`, of equal objectives the cheapest; `None` when nothing fits. At most
/// `back_points` back-pointers are kept at once.
pub(super) fn choose(
    layers: &[LayerCurve],
    budget: &Budget,
    capacity: u64,
    back_points: usize,
) -> Option<Vec<usize>> {
    choose_in(layers, budget, capacity, Units::of(layers), back_points)
}

fn choose_in(
    layers: &[LayerCurve],
    budget: &Budget,
    capacity: u64,
    units: Units,
    back_points: usize,
) -> Option<Vec<usize>> {
    // One layer's frontier is at most its candidates: always kept.
    let limit = if layers.len() <= 1 {
        usize::MAX
    } else {
        back_points
    };
    let mut back = Vec::with_capacity(layers.len());
    if let Some(last) = sweep(layers, budget, capacity, units, Some((&mut back, limit))) {
        return (!last.is_empty()).then(|| back_track(&back));
    }
    let mid = layers.len() / 2;
    let (first, second) = layers.split_at(mid);
    let left = sweep(first, budget, capacity, units, None)?;
    let right = sweep(second, budget, capacity, units, None)?;
    let (left_capacity, right_capacity) = best_split(&left, &right, capacity)?;
    let mut chosen = choose_in(first, budget, left_capacity, units, back_points)?;
    chosen.extend(choose_in(
        second,
        budget,
        right_capacity,
        units,
        back_points,
    )?);
    Some(chosen)
}

/// The frontier after the last of `layers` (empty when nothing fits). With `back`, each
/// layer's back-pointers are pushed to it, and `None` is returned as soon as they pass
/// `limit` points in all.
fn sweep(
    layers: &[LayerCurve],
    budget: &Budget,
    capacity: u64,
    units: Units,
    mut back: Option<(&mut Vec<Back>, usize)>,
) -> Option<Vec<Point>> {
    let mut kept = 0usize;
    let mut current = vec![Point {
        cost: 0,
        objective: 0.0,
        from: 0,
        option: 0,
    }];
    for layer in layers {
        let scale = layer.sensitivity / units.sensitivity;
        let mut next = Vec::with_capacity(current.len() * layer.options.len());
        for (i, p) in current.iter().enumerate() {
            for (k, o) in layer.options.iter().enumerate() {
                let Some(c) = cost(layer, o, budget).and_then(|c| c.checked_add(p.cost)) else {
                    continue;
                };
                if c <= capacity {
                    next.push(Point {
                        cost: c,
                        objective: p.objective + scale * (o.error / units.error),
                        from: i as u32,
                        option: k as u32,
                    });
                }
            }
        }
        keep_pareto(&mut next);
        if let Some((back, limit)) = back.as_mut() {
            kept = kept.saturating_add(next.len());
            if kept > *limit {
                return None;
            }
            back.push((
                next.iter().map(|p| p.from).collect(),
                next.iter().map(|p| p.option as u8).collect(),
            ));
        }
        current = next;
    }
    Some(current)
}

/// Keeps the Pareto frontier of `points`: by cost, each point must beat every cheaper one.
fn keep_pareto(points: &mut Vec<Point>) {
    points.sort_by(|a, b| {
        a.cost
            .cmp(&b.cost)
            .then(a.objective.total_cmp(&b.objective))
    });
    let mut best = f64::INFINITY;
    points.retain(|p| {
        let keep = p.objective < best;
        if keep {
            best = p.objective;
        }
        keep
    });
}

/// The options of the last frontier's last point (the least objective, and of equals the
/// cheapest: it is first), followed back layer by layer.
fn back_track(back: &[Back]) -> Vec<usize> {
    let mut chosen = vec![0; back.len()];
    let mut at = back
        .last()
        .map_or(0, |(from, _)| from.len().saturating_sub(1));
    for (l, (from, option)) in back.iter().enumerate().rev() {
        chosen[l] = option[at] as usize;
        at = from[at] as usize;
    }
    chosen
}

/// The costs `(left, right)` of the best pair of frontier points within `capacity`: the least
/// summed objective, of equals the cheapest. Both frontiers are sorted by cost with falling
/// objectives, so the best right point for a left one is the dearest that still fits.
fn best_split(left: &[Point], right: &[Point], capacity: u64) -> Option<(u64, u64)> {
    let mut best: Option<(f64, u64, u64, u64)> = None;
    let mut j = right.len();
    for l in left {
        while j > 0 && l.cost.saturating_add(right[j - 1].cost) > capacity {
            j -= 1;
        }
        let Some(r) = j.checked_sub(1).map(|j| &right[j]) else {
            break;
        };
        let (objective, total) = (l.objective + r.objective, l.cost + r.cost);
        if best.is_none_or(|(o, c, _, _)| objective < o || (objective == o && total < c)) {
            best = Some((objective, total, l.cost, r.cost));
        }
    }
    best.map(|(_, _, left_cost, right_cost)| (left_cost, right_cost))
}
