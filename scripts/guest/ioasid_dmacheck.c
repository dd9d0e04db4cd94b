// SPDX-License-Identifier: GPL-2.0
/*
 * ioasid_dmacheck: a guest-side check that memory a DMA engine wrote while a live migration
 * was in its pre-copy phase reached the destination.
 *
 * Part of ioasid's QEMU migration test (scripts/qemu-migration.sh, docs/qemu.md). A page that
 * only a device writes is sent again by the VMM only if the IOMMU reports it dirty: the CPU's
 * dirty log never sees DMA. This module keeps such a buffer:
 *
 *   - at load it takes a DMA_MEMCPY channel (the one named by `channel`, else any free one)
 *     and allocates two coherent buffers of `size_kib` KiB, a source and a destination;
 *   - a kernel thread then, every `period_ms` ms, fills the source with the pattern of a new
 *     generation (CPU writes), has the engine copy it into the destination, waits for the
 *     completion interrupt, reads the destination back and records its checksum (the CPU
 *     only ever reads the destination);
 *   - an NMI (QEMU's monitor command `nmi`), or writing to `stop`, ends the thread after the
 *     copy in flight: the destination then holds the last generation for good, and the
 *     thread prints "IOASID-DMACHECK stopped generation=N checksum=X";
 *   - writing to `verify` (the guest's /init does it when dmatest has ended) stops the thread
 *     if it still runs, checksums the destination again and prints
 *         IOASID-DMACHECK PASS|FAIL generation=N recorded=X now=Y copy_errors=N
 *     PASS when the checksum now equals the one recorded when the device wrote the buffer and
 *     every copy was read back as written. Reading `result` gives PASS, FAIL or "none";
 *   - if the guest panics before that, a panic notifier prints the same comparison (marked
 *     "at panic"), so a destination that dies of stale memory still reports the buffer.
 *
 * The test migrates the guest after the thread has started, stops the thread (NMI) once the
 * migration's first pass over RAM has been sent, and checks the line on the destination: a
 * generation written after that pass reaches the destination only through IOMMU dirty
 * tracking.
 */
#include <linux/completion.h>
#include <linux/delay.h>
#include <linux/dma-mapping.h>
#include <linux/dmaengine.h>
#include <linux/kthread.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/panic_notifier.h>
#include <linux/string.h>
#include <linux/sysfs.h>
#include <asm/nmi.h>

#define TAG "IOASID-DMACHECK "

static char channel[32];
module_param_string(channel, channel, sizeof(channel), 0444);
MODULE_PARM_DESC(channel, "the DMA channel to use (e.g. dma1chan0); empty: any free memcpy channel");

static unsigned int size_kib = 4096;
module_param(size_kib, uint, 0444);
MODULE_PARM_DESC(size_kib, "size of the device-written buffer in KiB (default 4096)");

static unsigned int period_ms = 100;
module_param(period_ms, uint, 0444);
MODULE_PARM_DESC(period_ms, "pause between two generations in ms (default 100)");

/* What the thread shares with the readers; written by the thread only while it runs. */
static struct dma_chan *chan;
static void *source, *target;
static dma_addr_t source_dma, target_dma;
static size_t length;
static struct task_struct *worker;
static DECLARE_COMPLETION(copy_done);
static atomic_t stop_requested = ATOMIC_INIT(0);
static DEFINE_MUTEX(control);	/* serialises stop and verify */
static bool worker_stopped;	/* set under `control` once the thread has exited */
static bool worker_exited;	/* set by the thread as it leaves its loop */
static u32 generation;		/* the last generation copied and read back */
static u64 recorded;		/* the checksum of the destination after that copy */
static u32 copy_errors;		/* copies that failed or read back wrong */
static const char *result = "none";

/* The pattern of generation `gen`: one 64-bit word per index, all generations distinct. */
static inline u64 pattern_word(u32 gen, size_t index)
{
	u64 x = ((u64)gen << 40) ^ (u64)index ^ 0x5d3c1f0e2b4a6978ULL;

	x *= 0x9e3779b97f4a7c15ULL;
	x ^= x >> 31;
	x *= 0xbf58476d1ce4e5b9ULL;
	return x ^ (x >> 29);
}

/* A 64-bit checksum of `words` words: FNV-1a over words, the length folded in at the end. */
static u64 checksum_words(const u64 *words, size_t count)
{
	u64 h = 0xcbf29ce484222325ULL;
	size_t i;

	for (i = 0; i < count; i++) {
		h ^= READ_ONCE(words[i]);
		h *= 0x100000001b3ULL;
		h ^= h >> 32;
	}
	return h ^ count;
}

/* Fills the source with generation `gen`; returns the checksum of what it wrote. */
static u64 fill_source(u32 gen)
{
	u64 *words = source;
	size_t count = length / sizeof(u64), i;

	for (i = 0; i < count; i++)
		words[i] = pattern_word(gen, i);
	return checksum_words(words, count);
}

static void copy_callback(void *param)
{
	complete(&copy_done);
}

/* One device copy of the source into the destination; 0 when it completed. */
static int device_copy(void)
{
	struct dma_async_tx_descriptor *tx;
	dma_cookie_t cookie;

	tx = dmaengine_prep_dma_memcpy(chan, target_dma, source_dma, length, DMA_PREP_INTERRUPT | DMA_CTRL_ACK);
	if (!tx)
		return -ENOMEM;
	reinit_completion(&copy_done);
	tx->callback = copy_callback;
	tx->callback_param = NULL;
	cookie = dmaengine_submit(tx);
	if (dma_submit_error(cookie))
		return -EIO;
	dma_async_issue_pending(chan);
	if (!wait_for_completion_timeout(&copy_done, msecs_to_jiffies(10000)))
		return -ETIMEDOUT;
	if (dma_async_is_tx_complete(chan, cookie, NULL, NULL) != DMA_COMPLETE)
		return -EIO;
	return 0;
}

static int worker_main(void *unused)
{
	u32 gen = 0;

	while (!kthread_should_stop() && !atomic_read(&stop_requested)) {
		u64 expected, now;
		int err;

		gen++;
		expected = fill_source(gen);
		err = device_copy();
		now = checksum_words(target, length / sizeof(u64));
		if (err || now != expected) {
			copy_errors++;
			pr_info(TAG "copy error generation=%u err=%d expected=%016llx read=%016llx\n",
				gen, err, expected, now);
			if (err == -ETIMEDOUT)
				break;	/* a descriptor may still be in flight: write no more */
		}
		WRITE_ONCE(recorded, now);
		smp_wmb();
		WRITE_ONCE(generation, gen);
		if (gen == 1)
			pr_info(TAG "started channel=%s size=%zu period_ms=%u checksum=%016llx\n",
				dma_chan_name(chan), length, period_ms, now);
		if (period_ms)
			msleep_interruptible(period_ms);
	}
	pr_info(TAG "stopped generation=%u checksum=%016llx copy_errors=%u\n", generation, recorded, copy_errors);
	WRITE_ONCE(worker_exited, true);
	/* A thread that left on its own waits here for kthread_stop, which reaps it. */
	while (!kthread_should_stop()) {
		set_current_state(TASK_INTERRUPTIBLE);
		if (kthread_should_stop()) {
			__set_current_state(TASK_RUNNING);
			break;
		}
		schedule();
	}
	return 0;
}

/* Ends the thread (after the copy in flight); under `control`. */
static void stop_worker_locked(void)
{
	if (worker_stopped)
		return;
	atomic_set(&stop_requested, 1);
	kthread_stop(worker);
	worker_stopped = true;
}

/* Compares the destination with the recorded checksum and prints the verdict line. */
static bool compare_and_print(const char *when)
{
	u64 now = checksum_words(target, length / sizeof(u64));
	u64 then = READ_ONCE(recorded);
	u32 gen = READ_ONCE(generation);
	bool pass = gen > 0 && now == then && copy_errors == 0;

	pr_info(TAG "%s generation=%u recorded=%016llx now=%016llx copy_errors=%u%s\n",
		pass ? "PASS" : "FAIL", gen, then, now, copy_errors, when);
	return pass;
}

static int verify_set(const char *val, const struct kernel_param *kp)
{
	mutex_lock(&control);
	stop_worker_locked();
	result = compare_and_print("") ? "PASS" : "FAIL";
	mutex_unlock(&control);
	return 0;
}

static int stop_set(const char *val, const struct kernel_param *kp)
{
	mutex_lock(&control);
	stop_worker_locked();
	mutex_unlock(&control);
	return 0;
}

static int result_get(char *buffer, const struct kernel_param *kp)
{
	return sysfs_emit(buffer, "%s\n", result);
}

static const struct kernel_param_ops verify_ops = { .set = verify_set };
static const struct kernel_param_ops stop_ops = { .set = stop_set };
static const struct kernel_param_ops result_ops = { .get = result_get };
module_param_cb(verify, &verify_ops, NULL, 0200);
MODULE_PARM_DESC(verify, "write anything: stop the copies, compare the buffer with the recorded checksum, print PASS/FAIL");
module_param_cb(stop, &stop_ops, NULL, 0200);
MODULE_PARM_DESC(stop, "write anything: stop the copies (the buffer keeps the last generation)");
module_param_cb(result, &result_ops, NULL, 0444);
MODULE_PARM_DESC(result, "the verdict of the last verify: PASS, FAIL or none");

/* QEMU's `nmi`: the signal to stop writing (NMI context: only a flag; the thread sees it
 * within `period_ms`). */
static int nmi_stop(unsigned int type, struct pt_regs *regs)
{
	atomic_set(&stop_requested, 1);
	return NMI_HANDLED;
}

static int panic_report(struct notifier_block *nb, unsigned long event, void *data)
{
	/* Meaningful only once the thread has left its loop: no copy can be in flight then. */
	if (strcmp(result, "none") != 0)
		return NOTIFY_DONE;
	if (READ_ONCE(worker_exited))
		compare_and_print(" (at panic)");
	else
		pr_info(TAG "FAIL generation=%u: panic while the copies still ran\n", READ_ONCE(generation));
	return NOTIFY_DONE;
}

static struct notifier_block panic_block = { .notifier_call = panic_report };

static bool channel_named(struct dma_chan *c, void *name)
{
	return strcmp(dma_chan_name(c), name) == 0;
}

static int __init dmacheck_init(void)
{
	dma_cap_mask_t mask;
	struct device *dev;
	int err;

	length = (size_t)size_kib * 1024;
	if (length == 0 || length % sizeof(u64)) {
		pr_info(TAG "FAIL setup: bad size_kib=%u\n", size_kib);
		return -EINVAL;
	}
	dma_cap_zero(mask);
	dma_cap_set(DMA_MEMCPY, mask);
	chan = channel[0] ? dma_request_channel(mask, channel_named, channel) : dma_request_chan_by_mask(&mask);
	if (IS_ERR_OR_NULL(chan)) {
		pr_info(TAG "FAIL setup: no free memcpy channel %s\n", channel);
		return chan ? PTR_ERR(chan) : -ENODEV;
	}
	dev = chan->device->dev;
	err = -ENOMEM;
	source = dma_alloc_coherent(dev, length, &source_dma, GFP_KERNEL);
	target = dma_alloc_coherent(dev, length, &target_dma, GFP_KERNEL);
	if (!source || !target) {
		pr_info(TAG "FAIL setup: cannot allocate 2 x %zu bytes\n", length);
		goto fail;
	}
	err = register_nmi_handler(NMI_UNKNOWN, nmi_stop, 0, "ioasid_dmacheck");
	if (err)
		goto fail;
	atomic_notifier_chain_register(&panic_notifier_list, &panic_block);
	worker = kthread_run(worker_main, NULL, "ioasid_dmacheck");
	if (IS_ERR(worker)) {
		err = PTR_ERR(worker);
		atomic_notifier_chain_unregister(&panic_notifier_list, &panic_block);
		unregister_nmi_handler(NMI_UNKNOWN, "ioasid_dmacheck");
		goto fail;
	}
	return 0;
fail:
	if (source)
		dma_free_coherent(dev, length, source, source_dma);
	if (target)
		dma_free_coherent(dev, length, target, target_dma);
	dma_release_channel(chan);
	return err;
}

static void __exit dmacheck_exit(void)
{
	struct device *dev = chan->device->dev;

	mutex_lock(&control);
	stop_worker_locked();
	mutex_unlock(&control);
	atomic_notifier_chain_unregister(&panic_notifier_list, &panic_block);
	unregister_nmi_handler(NMI_UNKNOWN, "ioasid_dmacheck");
	dma_free_coherent(dev, length, source, source_dma);
	dma_free_coherent(dev, length, target, target_dma);
	dma_release_channel(chan);
}

module_init(dmacheck_init);
module_exit(dmacheck_exit);
MODULE_DESCRIPTION("ioasid: checksum of a device-written buffer across a live migration");
MODULE_LICENSE("GPL");
