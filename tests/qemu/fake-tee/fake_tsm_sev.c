// SPDX-License-Identifier: GPL-2.0
/*
 * fake_tsm_sev - TEST ONLY: a configfs-tsm report provider named "sev_guest" (the name
 * the real sev-guest driver registers) whose outblob is a recorded real SEV-SNP report
 * with the inblob patched in as REPORT_DATA and privlevel as VMPL. Lets the attester's
 * real configfs-tsm code run in a VM without SEV-SNP hardware. The report carries no
 * valid signature; never load this module in a production guest.
 *
 * Attribute visibility is sev-guest's without an SVSM (Linux 6.12): no service_* and no
 * manifestblob. auxblob is the certificate table with the VCEK that signed the recorded
 * report (certs=N: empty, as on a host without certificates).
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/module.h>
#include <linux/slab.h>
#include <linux/tsm.h>

#include "fake_tee.h"

static bool certs = true;
module_param(certs, bool, 0444);
MODULE_PARM_DESC(certs, "give the recorded VCEK in auxblob (default: yes)");

static int fake_tsm_report_new(struct tsm_report *report, void *data)
{
	struct tsm_desc *desc = &report->desc;
	u8 *buf;

	/* The core checks privlevel against the floor and TSM_PRIVLEVEL_MAX. */
	buf = kvzalloc(FAKE_SNP_REPORT_LEN, GFP_KERNEL);
	if (!buf)
		return -ENOMEM;
	fake_snp_report(buf, desc->inblob, desc->inblob_len, desc->privlevel);
	report->auxblob = NULL;
	report->auxblob_len = 0;
	if (certs) {
		u8 *table = kvzalloc(FAKE_SNP_CERT_TABLE_LEN, GFP_KERNEL);

		if (!table) {
			kvfree(buf);
			return -ENOMEM;
		}
		fake_snp_cert_table(table);
		report->auxblob = table;
		report->auxblob_len = FAKE_SNP_CERT_TABLE_LEN;
	}
	report->outblob = buf;
	report->outblob_len = FAKE_SNP_REPORT_LEN;
	return 0;
}

static bool fake_tsm_report_attr_visible(int n)
{
	switch (n) {
	case TSM_REPORT_GENERATION:
	case TSM_REPORT_PROVIDER:
	case TSM_REPORT_PRIVLEVEL:
	case TSM_REPORT_PRIVLEVEL_FLOOR:
		return true;
	}
	return false;
}

static bool fake_tsm_report_bin_attr_visible(int n)
{
	switch (n) {
	case TSM_REPORT_INBLOB:
	case TSM_REPORT_OUTBLOB:
	case TSM_REPORT_AUXBLOB:
		return true;
	}
	return false;
}

static const struct tsm_ops fake_tsm_ops = {
	.name = "sev_guest",
	.privlevel_floor = 0,
	.report_new = fake_tsm_report_new,
	.report_attr_visible = fake_tsm_report_attr_visible,
	.report_bin_attr_visible = fake_tsm_report_bin_attr_visible,
};

static int __init fake_tsm_sev_init(void)
{
	int ret = fake_host_data_init();

	if (ret)
		return ret;
	ret = tsm_register(&fake_tsm_ops, NULL);
	if (ret)
		return ret;
	if (fake_host_data_set)
		pr_info("HOST_DATA from fw_cfg %s: %*phN\n", FAKE_HOST_DATA_FW_CFG,
			FAKE_SNP_HOST_DATA_LEN, fake_host_data);
	pr_warn("TEST ONLY: configfs-tsm provider sev_guest answers with a recorded SEV-SNP report (no valid signature)\n");
	return 0;
}

static void __exit fake_tsm_sev_exit(void)
{
	tsm_unregister(&fake_tsm_ops);
}

module_init(fake_tsm_sev_init);
module_exit(fake_tsm_sev_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("test only: fake configfs-tsm sev_guest provider answering with a recorded SEV-SNP report");
