/*
 * crc32c.h - CRC-32C (Castagnoli), the checksum of snapshots
 * (consensus/fsm.c). SSE4.2's crc32 instruction where the CPU has it (about
 * 20 GB/s here), a table otherwise; both give the same values.
 */
#ifndef DRIFTD_CRC32C_H
#define DRIFTD_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* CRC-32C of len bytes at p, continuing from crc (0 to start). */
uint32_t crc32c(uint32_t crc, const void *p, size_t len);

/* The table path alone, whatever the CPU (tests compare the two). */
uint32_t crc32c_portable(uint32_t crc, const void *p, size_t len);

#endif
