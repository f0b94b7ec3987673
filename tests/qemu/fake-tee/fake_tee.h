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
 *
 * HOST_DATA is what the host set at launch (QEMU: sev-snp-guest,host-data=...). Here
 * the host sets it with a QEMU fw_cfg file, read once at module load:
 *	-fw_cfg name=opt/cocoon/fake-tee/host_data,file=HOST_DATA_FILE
 * (raw bytes, at most 32, zero-padded); without it HOST_DATA stays the recorded one.
 */
#ifndef FAKE_TEE_H
#define FAKE_TEE_H

#include <linux/bug.h>
#include <linux/io.h>
#include <linux/string.h>
#include <linux/types.h>
#include <asm/byteorder.h>

#include "fake_report.h"	/* fake_report[], FAKE_REPORT_LEN, fake_vcek[], FAKE_VCEK_LEN */

/* AMD SEV-SNP Firmware ABI (pub. 56860), ATTESTATION_REPORT. */
#define FAKE_SNP_REPORT_LEN		1184
#define FAKE_SNP_VMPL_OFFSET		0x30
#define FAKE_SNP_REPORT_DATA_OFFSET	0x50
#define FAKE_SNP_REPORT_DATA_LEN	64
#define FAKE_SNP_HOST_DATA_OFFSET	0xc0
#define FAKE_SNP_HOST_DATA_LEN		32
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

/* HOST_DATA to report; set by fake_host_data_init(). */
static u8 fake_host_data[FAKE_SNP_HOST_DATA_LEN];
static bool fake_host_data_set;

/* QEMU fw_cfg, I/O port interface (docs/specs/fw_cfg.rst). */
#define FAKE_FW_CFG_PORT_SEL		0x510
#define FAKE_FW_CFG_PORT_DATA		0x511
#define FAKE_FW_CFG_SIGNATURE		0x0000
#define FAKE_FW_CFG_FILE_DIR		0x0019
#define FAKE_FW_CFG_MAX_FILES		4096
#define FAKE_HOST_DATA_FW_CFG		"opt/cocoon/fake-tee/host_data"

struct fake_fw_cfg_file {
	__be32 size;
	__be16 select;
	__u16 reserved;
	char name[56];
};

static inline void fake_fw_cfg_read(void *buf, size_t len)
{
	u8 *p = buf;

	while (len--)
		*p++ = inb(FAKE_FW_CFG_PORT_DATA);
}

/*
 * Reads HOST_DATA from the fw_cfg file FAKE_HOST_DATA_FW_CFG, if the host gave one.
 * Returns 0 (also when there is none: the recorded HOST_DATA stays) or -errno.
 */
static inline int fake_host_data_init(void)
{
	struct fake_fw_cfg_file f;
	__be32 count;
	char sig[4];
	u32 i, n, size;

	memcpy(fake_host_data, fake_report + FAKE_SNP_HOST_DATA_OFFSET,
	       FAKE_SNP_HOST_DATA_LEN);
	outw(FAKE_FW_CFG_SIGNATURE, FAKE_FW_CFG_PORT_SEL);
	fake_fw_cfg_read(sig, sizeof(sig));
	if (memcmp(sig, "QEMU", sizeof(sig)))
		return 0;	/* not QEMU: no fw_cfg */
	outw(FAKE_FW_CFG_FILE_DIR, FAKE_FW_CFG_PORT_SEL);
	fake_fw_cfg_read(&count, sizeof(count));
	n = min_t(u32, be32_to_cpu(count), FAKE_FW_CFG_MAX_FILES);
	for (i = 0; i < n; i++) {
		fake_fw_cfg_read(&f, sizeof(f));
		if (strncmp(f.name, FAKE_HOST_DATA_FW_CFG, sizeof(f.name)))
			continue;
		size = be32_to_cpu(f.size);
		if (size > FAKE_SNP_HOST_DATA_LEN)
			return -E2BIG;
		memset(fake_host_data, 0, FAKE_SNP_HOST_DATA_LEN);
		outw(be16_to_cpu(f.select), FAKE_FW_CFG_PORT_SEL);
		fake_fw_cfg_read(fake_host_data, size);
		fake_host_data_set = true;
		return 0;
	}
	return 0;
}

/*
 * Writes the recorded report to @out (FAKE_SNP_REPORT_LEN bytes) with @user_data
 * (@len <= 64 bytes, zero-padded) as REPORT_DATA, @vmpl as VMPL and the host's
 * HOST_DATA, as the firmware would have reported them.
 */
static inline void fake_snp_report(u8 *out, const u8 *user_data, size_t len, u32 vmpl)
{
	__le32 v = cpu_to_le32(vmpl);

	memcpy(out, fake_report, FAKE_SNP_REPORT_LEN);
	memcpy(out + FAKE_SNP_HOST_DATA_OFFSET, fake_host_data, FAKE_SNP_HOST_DATA_LEN);
	memset(out + FAKE_SNP_REPORT_DATA_OFFSET, 0, FAKE_SNP_REPORT_DATA_LEN);
	memcpy(out + FAKE_SNP_REPORT_DATA_OFFSET, user_data,
	       min_t(size_t, len, FAKE_SNP_REPORT_DATA_LEN));
	memcpy(out + FAKE_SNP_VMPL_OFFSET, &v, sizeof(v));
}

#endif /* FAKE_TEE_H */
