/* SPDX-License-Identifier: GPL-2.0 */
/*
 * TEST ONLY. Shared by the fake SEV-SNP guest modules: the recorded report and how a
 * request is answered from it. Never build this into a production initrd.
 *
 * The report is a real SEV-SNP ATTESTATION_REPORT recorded on AMD hardware (see
 * fake_report.h, generated at build time from ../../../attester/tests/fixtures/snp/).
 * Patching REPORT_DATA and VMPL breaks its signature: only a verifier that checks no
 * signature (cocoon-test-kbs --accept-evidence snp-test) accepts the result.
 */
#ifndef FAKE_TEE_H
#define FAKE_TEE_H

#include <linux/bug.h>
#include <linux/string.h>
#include <linux/types.h>
#include <asm/byteorder.h>

#include "fake_report.h"	/* fake_report[], FAKE_REPORT_LEN */

/* AMD SEV-SNP Firmware ABI (pub. 56860), ATTESTATION_REPORT. */
#define FAKE_SNP_REPORT_LEN		1184
#define FAKE_SNP_VMPL_OFFSET		0x30
#define FAKE_SNP_REPORT_DATA_OFFSET	0x50
#define FAKE_SNP_REPORT_DATA_LEN	64
/* MSG_REPORT_RSP: status (u32), report size (u32), 24 reserved bytes, the report. */
#define FAKE_SNP_MSG_REPORT_RSP_HEADER	0x20

static_assert(FAKE_REPORT_LEN == FAKE_SNP_REPORT_LEN);

/*
 * Writes the recorded report to @out (FAKE_SNP_REPORT_LEN bytes) with @user_data
 * (@len <= 64 bytes, zero-padded) as REPORT_DATA and @vmpl as VMPL, as the firmware
 * would have reported them.
 */
static inline void fake_snp_report(u8 *out, const u8 *user_data, size_t len, u32 vmpl)
{
	__le32 v = cpu_to_le32(vmpl);

	memcpy(out, fake_report, FAKE_SNP_REPORT_LEN);
	memset(out + FAKE_SNP_REPORT_DATA_OFFSET, 0, FAKE_SNP_REPORT_DATA_LEN);
	memcpy(out + FAKE_SNP_REPORT_DATA_OFFSET, user_data,
	       min_t(size_t, len, FAKE_SNP_REPORT_DATA_LEN));
	memcpy(out + FAKE_SNP_VMPL_OFFSET, &v, sizeof(v));
}

#endif /* FAKE_TEE_H */
