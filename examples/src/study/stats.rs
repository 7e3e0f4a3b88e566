//! Paired comparisons over seeds: the mean difference between two methods run on the same
//! seeds, with a 95% t interval, and what it says (better, worse or a tie).

use statrs::distribution::{ContinuousCDF, StudentsT};

/// A paired difference `a − b` over seeds, with its 95% interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Paired {
    /// Mean of the differences.
    pub mean: f64,
    /// Lower end of the 95% interval.
    pub low: f64,
    /// Upper end of the 95% interval.
    pub high: f64,
    /// Seeds paired.
    pub n: usize,
}

/// What a paired difference says about method `a` against `b`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The interval lies wholly on the better side.
    Better,
    /// The interval lies wholly on the worse side.
    Worse,
    /// The interval contains zero (or there are too few seeds).
    Tie,
}

impl Verdict {
    /// The word the tables print.
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Better => "better",
            Verdict::Worse => "worse",
            Verdict::Tie => "tie",
        }
    }
}

/// The paired difference `a[i] − b[i]` (seed `i` in both), with the 95% interval of Student's t
/// over `n − 1` degrees of freedom; `None` for fewer than two pairs or unequal lengths.
pub fn paired(a: &[f64], b: &[f64]) -> Option<Paired> {
    let n = a.len();
    if n < 2 || b.len() != n {
        return None;
    }
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let mean = d.iter().sum::<f64>() / n as f64;
    let var = d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let t = StudentsT::new(0.0, 1.0, (n - 1) as f64)
        .ok()?
        .inverse_cdf(0.975);
    let half = t * (var / n as f64).sqrt();
    Some(Paired {
        mean,
        low: mean - half,
        high: mean + half,
        n,
    })
}

impl Paired {
    /// Better, worse or a tie, for a metric where lower is better (`lower_is_better`) or higher.
    pub fn verdict(&self, lower_is_better: bool) -> Verdict {
        let (below, above) = (self.high < 0.0, self.low > 0.0);
        match (below, above, lower_is_better) {
            (true, _, true) | (_, true, false) => Verdict::Better,
            (true, _, false) | (_, true, true) => Verdict::Worse,
            _ => Verdict::Tie,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_matches_a_hand_computed_one() {
        // d = a − b = [-0.5, -0.5, 0.5, -0.5, -1]: mean -0.4, sample variance 1.2 / 4 = 0.3,
        // standard error sqrt(0.3 / 5) = 0.244949; t(0.975, 4) = 2.776445 (tables): ± 0.680080.
        let a = [1.0, 2.0, 3.0, 4.0, 5.0];
        let b = [1.5, 2.5, 2.5, 4.5, 6.0];
        let p = paired(&a, &b).unwrap();
        assert!((p.mean + 0.4).abs() < 1e-12, "{p:?}");
        assert!((p.low + 1.080_080).abs() < 1e-5, "{p:?}");
        assert!((p.high - 0.280_080).abs() < 1e-5, "{p:?}");
        assert_eq!(p.n, 5);
        assert_eq!(p.verdict(true), Verdict::Tie);
        // Every seed 1 lower: better where lower is better, worse where higher is.
        let c: Vec<f64> = b.iter().map(|x| x - 1.0).collect();
        let shifted = paired(&c, &b).unwrap();
        assert!((shifted.low + 1.0).abs() < 1e-9 && (shifted.high + 1.0).abs() < 1e-9);
        assert_eq!(shifted.verdict(true), Verdict::Better);
        assert_eq!(shifted.verdict(false), Verdict::Worse);
        assert_eq!(paired(&a[..1], &b[..1]), None);
        assert_eq!(paired(&a, &b[..4]), None);
    }
}
