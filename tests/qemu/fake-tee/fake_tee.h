/* SPDX-License-Identifier: GPL-2.0 */
/*
 * TEST ONLY. Shared by the fake SEV-SNP guest modules: the recorded report and how a
 * request is answered from it. Never build this into a production initrd.
 *
 * The report is a real SEV-SNP ATTESTATION_REPORT recorded on AMD hardware, and the
 * VCEK certificate that signed it (see fake_report.h, generated at build time from
 * attester/tests/fixtures/snp/).
 * Patching REPORT_DATA and VMPL breaks its signature: only a verifier that checks no
 * signature (cocoon-test-kbs --accept-evidence snp-test) accepts the result.
 */
#ifndef FAKE_TEE_H
#define FAKE_TEE_H

#include <linux/bug.h>
#include <linux/string.h>
#include <linux/types.h>
#include <asm/byteorder.h>

#include "fake_report.h"	/* fake_report[], FAKE_REPORT_LEN, fake_vcek[], FAKE_VCEK_LEN */

/* AMD SEV-SNP Firmware ABI (pub. 56860), ATTESTATION_REPORT. */
#define FAKE_SNP_REPORT_LEN		1184
#define FAKE_SNP_VMPL_OFFSET		0x30
#define FAKE_SNP_REPORT_DATA_OFFSET	0x50
#define FAKE_SNP_REPORT_DATA_LEN	64
/* MSG_REPORT_RSP: status (u32), report size (u32), 24 reserved bytes, the report. */
#define FAKE_SNP_MSG_REPORT_RSP_HEADER	0x20

static_assert(FAKE_REPORT_LEN == FAKE_SNP_REPORT_LEN);

/*
 * GHCB spec (pub. 56421), "SNP Extended Guest Request": the certificate table is
 * entries of { GUID, offset (u32), length (u32) }, ended by an all-zero entry, then
 * the data; offsets count from the table's start. Ours: the VCEK, then the end.
 */
#define FAKE_SNP_CERT_ENTRY_LEN		24
#define FAKE_SNP_CERT_TABLE_LEN		(2 * FAKE_SNP_CERT_ENTRY_LEN + FAKE_VCEK_LEN)
/* VCEK: 63da758d-e664-4564-adc5-f4b93be8accd, in the table's byte order. */
static const u8 fake_vcek_guid[16] = {
	0x63, 0xda, 0x75, 0x8d, 0xe6, 0x64, 0x45, 0x64,
	0xad, 0xc5, 0xf4, 0xb9, 0x3b, 0xe8, 0xac, 0xcd,
};

/* Writes the certificate table (FAKE_SNP_CERT_TABLE_LEN bytes) to @out. */
static inline void fake_snp_cert_table(u8 *out)
{
	__le32 offset = cpu_to_le32(2 * FAKE_SNP_CERT_ENTRY_LEN);
	__le32 length = cpu_to_le32(FAKE_VCEK_LEN);

	memset(out, 0, 2 * FAKE_SNP_CERT_ENTRY_LEN);
	memcpy(out, fake_vcek_guid, sizeof(fake_vcek_guid));
	memcpy(out + 16, &offset, sizeof(offset));
	memcpy(out + 20, &length, sizeof(length));
	memcpy(out + 2 * FAKE_SNP_CERT_ENTRY_LEN, fake_vcek, FAKE_VCEK_LEN);
}

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
