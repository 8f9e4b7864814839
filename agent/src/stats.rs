//! Counters that report themselves. Each stage's counters are declared once with
//! [`counters!`], which makes the struct of atomics and its [`Counters::report`]; the stats line
//! and the summary (live and replay) are printed by one function, [`log`], from those reports.

/// A set of counters that can list itself.
pub trait Counters {
    /// Appends `(name, value)` for every counter, in declaration order.
    fn report(&self, out: &mut Vec<(String, u64)>);
}

/// Declares a struct of `AtomicU64` counters (all public, all starting at 0) that implements
/// [`Counters`], each reported under its field name.
macro_rules! counters {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $( $(#[$fmeta:meta])* $field:ident ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Default)]
        $vis struct $name {
            $( $(#[$fmeta])* pub $field: ::std::sync::atomic::AtomicU64, )*
        }

        impl $crate::stats::Counters for $name {
            fn report(&self, out: &mut Vec<(String, u64)>) {
                $( out.push((
                    stringify!($field).to_owned(),
                    self.$field.load(::std::sync::atomic::Ordering::Relaxed),
                )); )*
            }
        }
    };
}
pub(crate) use counters;

/// Counters read at one moment (e.g. at exit, after the stages that kept them are gone).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot(pub Vec<(String, u64)>);

impl Counters for Snapshot {
    fn report(&self, out: &mut Vec<(String, u64)>) {
        out.extend(self.0.iter().cloned());
    }
}

/// `what name=value name=value ...` over every set, in order.
#[must_use]
pub fn line(what: &str, sets: &[&dyn Counters]) -> String {
    use std::fmt::Write as _;
    let mut values = Vec::new();
    for set in sets {
        set.report(&mut values);
    }
    let mut s = what.to_owned();
    for (name, v) in values {
        let _ = write!(s, " {name}={v}");
    }
    s
}

/// Logs [`line`] at INFO.
pub fn log(what: &str, sets: &[&dyn Counters]) {
    tracing::info!("{}", line(what, sets));
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;

    counters! {
        /// Test counters.
        struct Two {
            /// One.
            first,
            /// Two.
            second,
        }
    }

    #[test]
    fn every_declared_counter_is_reported_in_order_with_later_sets_after() {
        let two = Two::default();
        two.second.fetch_add(7, Ordering::Relaxed);
        let kernel = Snapshot(vec![("kernel_calls".to_owned(), 3)]);
        assert_eq!(
            line("summary", &[&two, &kernel]),
            "summary first=0 second=7 kernel_calls=3"
        );
    }
}
