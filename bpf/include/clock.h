/* SPDX-License-Identifier: Apache-2.0 */
/*
 * clock.h - the probe's one clock. TAI where the kernel has bpf_ktime_get_tai_ns (Linux >= 6.1), so
 * user space gets UTC as TAI - offset; else CLOCK_MONOTONIC. The agent probes the kernel once and
 * compiles with -DHFTPF_USE_TAI=1 or 0, and records the choice in hftpf_meta.clock. One read costs
 * ~45 ns on the reference VM, so each stamped packet reads it once.
 */
#ifndef HFTPF_CLOCK_H
#define HFTPF_CLOCK_H

#ifndef HFTPF_USE_TAI
#define HFTPF_USE_TAI 0
#endif

static __always_inline __u64 hftpf_now(void)
{
#if HFTPF_USE_TAI
	return bpf_ktime_get_tai_ns();
#else
	return bpf_ktime_get_ns();
#endif
}

#endif /* HFTPF_CLOCK_H */
