// SPDX-License-Identifier: GPL-2.0
/*
 * fake_sev_guest - TEST ONLY: a /dev/sev-guest that answers SNP_GET_REPORT and
 * SNP_GET_EXT_REPORT with a recorded real SEV-SNP report, the request's user data
 * patched in as REPORT_DATA. Lets the attester's real ioctl code run in a VM without
 * SEV-SNP hardware. The answer carries no valid signature; never load this module
 * in a production guest.
 *
 * The uapi is the kernel's (include/uapi/linux/sev-guest.h); the checks follow
 * drivers/virt/coco/sev-guest/sev-guest.c of Linux 6.12 (msg_version must be non-zero,
 * certs_len a page multiple of at most SEV_FW_BLOB_MAX_SIZE). An extended request gets
 * the certificate table a host with certificates gives: the VCEK that signed the
 * recorded report (certs=N: none, a zeroed buffer, as from a host without any). The
 * table fits in the smallest buffer (one page), so the host's "buffer too small" answer
 * (VMM error SNP_GUEST_VMM_ERR_INVALID_LEN) never happens here.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <uapi/linux/sev-guest.h>

#include "fake_tee.h"

/* include/linux/psp-sev.h */
#define FAKE_SEV_FW_BLOB_MAX_SIZE	0x4000
#define FAKE_SNP_VMPL_MAX		3

static_assert(FAKE_SNP_CERT_TABLE_LEN <= PAGE_SIZE);

static bool certs = true;
module_param(certs, bool, 0444);
MODULE_PARM_DESC(certs, "answer extended requests with the recorded VCEK (default: yes)");

static DEFINE_MUTEX(fake_snp_cmd_mutex);
static unsigned long fake_snp_requests;

static int fake_get_report(struct snp_guest_request_ioctl *arg, bool ext)
{
	struct snp_ext_report_req req = {};
	size_t req_len = ext ? sizeof(req) : sizeof(req.data);
	struct snp_report_resp *resp;
	int ret = 0;

	if (!arg->req_data || !arg->resp_data)
		return -EINVAL;
	if (copy_from_user(&req, u64_to_user_ptr(arg->req_data), req_len))
		return -EFAULT;
	if (req.data.vmpl > FAKE_SNP_VMPL_MAX)
		return -EINVAL;

	if (ext && req.certs_len && req.certs_address) {
		void __user *certs_ptr = u64_to_user_ptr(req.certs_address);
		size_t table_len = certs ? FAKE_SNP_CERT_TABLE_LEN : 0;
		u8 *table;

		if (req.certs_len > FAKE_SEV_FW_BLOB_MAX_SIZE ||
		    !IS_ALIGNED(req.certs_len, PAGE_SIZE))
			return -EINVAL;
		/* The table, then zeros (all zeros: no certificates). */
		if (clear_user(certs_ptr, req.certs_len))
			return -EFAULT;
		if (table_len) {
			table = kzalloc(table_len, GFP_KERNEL);
			if (!table)
				return -ENOMEM;
			fake_snp_cert_table(table);
			ret = copy_to_user(certs_ptr, table, table_len) ? -EFAULT : 0;
			kfree(table);
			if (ret)
				return ret;
		}
	}

	resp = kzalloc(sizeof(*resp), GFP_KERNEL);
	if (!resp)
		return -ENOMEM;
	/* status 0 (success), report_size, then the report. */
	*(__le32 *)&resp->data[4] = cpu_to_le32(FAKE_SNP_REPORT_LEN);
	fake_snp_report(resp->data + FAKE_SNP_MSG_REPORT_RSP_HEADER,
			req.data.user_data, sizeof(req.data.user_data),
			req.data.vmpl);
	if (copy_to_user(u64_to_user_ptr(arg->resp_data), resp, sizeof(*resp)))
		ret = -EFAULT;
	kfree(resp);
	return ret;
}

static long fake_snp_ioctl(struct file *file, unsigned int ioctl,
			   unsigned long arg)
{
	void __user *argp = (void __user *)arg;
	struct snp_guest_request_ioctl input;
	int ret;

	if (copy_from_user(&input, argp, sizeof(input)))
		return -EFAULT;
	input.exitinfo2 = 0xff;	/* as the real driver: "not issued" until it is */
	if (!input.msg_version)
		return -EINVAL;

	mutex_lock(&fake_snp_cmd_mutex);
	switch (ioctl) {
	case SNP_GET_REPORT:
		ret = fake_get_report(&input, false);
		break;
	case SNP_GET_EXT_REPORT:
		ret = fake_get_report(&input, true);
		break;
	default:
		ret = -ENOTTY;
		break;
	}
	if (!ret) {
		input.exitinfo2 = 0;	/* firmware: success */
		fake_snp_requests++;
	}
	mutex_unlock(&fake_snp_cmd_mutex);

	/* As the real driver: exitinfo2 goes back only when non-zero. */
	if (input.exitinfo2 && copy_to_user(argp, &input, sizeof(input)))
		return -EFAULT;
	return ret;
}

static const struct file_operations fake_snp_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = fake_snp_ioctl,
};

static struct miscdevice fake_snp_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "sev-guest",
	.fops = &fake_snp_fops,
};

static int __init fake_sev_guest_init(void)
{
	int ret = fake_host_data_init();

	if (ret)
		return ret;
	ret = misc_register(&fake_snp_misc);
	if (ret)
		return ret;
	if (fake_host_data_set)
		pr_info("HOST_DATA from fw_cfg %s: %*phN\n", FAKE_HOST_DATA_FW_CFG,
			FAKE_SNP_HOST_DATA_LEN, fake_host_data);
	pr_warn("TEST ONLY: /dev/sev-guest answers with a recorded SEV-SNP report (no valid signature)\n");
	return 0;
}

static void __exit fake_sev_guest_exit(void)
{
	misc_deregister(&fake_snp_misc);
	pr_info("answered %lu report requests\n", fake_snp_requests);
}

module_init(fake_sev_guest_init);
module_exit(fake_sev_guest_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("test only: fake /dev/sev-guest answering with a recorded SEV-SNP report");
