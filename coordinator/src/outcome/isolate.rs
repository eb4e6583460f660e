//! Poison isolation: when the database refuses a batch for its data (not
//! for an outage), split it until the offending items stand alone. Every
//! other item is applied; the caller dead-letters the poisoned ones and ends
//! their jobs. One bad report never holds back the healthy ones behind it.
//!
//! ```text
//!  [a b c d e f g h] refused ─► [a b c d] ok   [e f g h] refused
//!                                             ─► [e f] ok  [g h] refused
//!                                                          ─► [g] ok  [h] poisoned
//! ```
//!
//! Halves are applied in order, so items of one job keep their order. A
//! half that committed before an outage is replayed when the caller runs
//! the whole batch again, and the dispatch tokens fence the replay.

use std::future::Future;

/// Runs `apply` over `items`, splitting on poison. Returns the indices of
/// the items that are refused alone, in order, or the first error that is
/// not poison (an outage: the caller retries the whole batch later).
pub async fn isolate<'a, T, E, F, Fut>(
    items: &'a [T],
    is_poison: impl Fn(&E) -> bool,
    mut apply: F,
) -> Result<Vec<usize>, E>
where
    F: FnMut(&'a [T]) -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let mut poisoned = Vec::new();
    // Ranges still to apply, the next one on top.
    let mut todo = vec![(0, items.len())];
    while let Some((lo, hi)) = todo.pop() {
        if lo == hi {
            continue;
        }
        match apply(&items[lo..hi]).await {
            Ok(()) => {}
            Err(e) if is_poison(&e) => {
                if hi - lo == 1 {
                    poisoned.push(lo);
                } else {
                    let mid = lo + (hi - lo) / 2;
                    todo.push((mid, hi));
                    todo.push((lo, mid));
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(poisoned)
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    #[derive(Debug, PartialEq)]
    enum E {
        Poison,
        Outage,
    }

    /// Applies like a database that refuses any batch holding a negative
    /// number, recording what committed.
    async fn run(items: &[i32]) -> (Result<Vec<usize>, E>, Vec<i32>, usize) {
        let committed = RefCell::new(Vec::new());
        let calls = RefCell::new(0);
        let result = isolate(
            items,
            |e: &E| *e == E::Poison,
            |batch: &[i32]| {
                *calls.borrow_mut() += 1;
                let outcome = if batch.contains(&0) {
                    Err(E::Outage)
                } else if batch.iter().any(|v| *v < 0) {
                    Err(E::Poison)
                } else {
                    committed.borrow_mut().extend_from_slice(batch);
                    Ok(())
                };
                async move { outcome }
            },
        )
        .await;
        (result, committed.into_inner(), calls.into_inner())
    }

    #[tokio::test]
    async fn a_healthy_batch_is_one_call() {
        let (r, committed, calls) = run(&[1, 2, 3]).await;
        assert_eq!(r, Ok(vec![]));
        assert_eq!(committed, vec![1, 2, 3]);
        assert_eq!(calls, 1);
    }

    #[tokio::test]
    async fn poison_is_isolated_and_the_rest_applies_in_order() {
        let items: Vec<i32> = (1..=100)
            .map(|i| if i == 37 || i == 90 { -i } else { i })
            .collect();
        let (r, committed, calls) = run(&items).await;
        assert_eq!(r, Ok(vec![36, 89]));
        let want: Vec<i32> = (1..=100).filter(|i| *i != 37 && *i != 90).collect();
        assert_eq!(committed, want, "every healthy item once, in order");
        // Two poisoned items cost about 2 * 2 * log2(100) calls, not 100.
        assert!(calls <= 30, "{calls} calls");
    }

    #[tokio::test]
    async fn everything_poisoned_is_every_index() {
        let (r, committed, _) = run(&[-1, -2, -3]).await;
        assert_eq!(r, Ok(vec![0, 1, 2]));
        assert!(committed.is_empty());
    }

    #[tokio::test]
    async fn an_outage_stops_the_split_and_is_returned() {
        let (r, committed, _) = run(&[1, -2, 3, 0, 5]).await;
        assert_eq!(r, Err(E::Outage));
        assert!(
            !committed.contains(&5),
            "nothing after the outage is applied"
        );
    }

    #[tokio::test]
    async fn nothing_to_apply_is_no_call() {
        let (r, _, calls) = run(&[]).await;
        assert_eq!(r, Ok(vec![]));
        assert_eq!(calls, 0);
    }
}
