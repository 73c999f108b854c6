//! The resync controller's limits (outside `core`, which may not read the clock).

use std::time::Instant;

use rep_replicator::core::pace::Pace;

#[test]
fn fixed_rate_and_the_controller() {
    let now = Instant::now();
    assert_eq!(Pace::fixed(40 * 1024).limits(now, None), (40 << 20, None));
    let p = Pace::default();
    assert_eq!(p.limits(now, None), (100 << 20, Some(51200)));
    // Application writes pull the resync down to c-min-rate.
    assert_eq!(p.limits(now, Some(now)).0, 250 * 1024);
    let no_fill = Pace {
        c_fill_target_bytes: 0,
        ..p
    };
    assert_eq!(no_fill.limits(now, None).1, Some(100 << 20));
}
