/*
 * test_crc32c.c - CRC-32C (crc32c.h): the standard check values, both paths
 * (the instruction when the CPU has it, the table) equal on every length and
 * alignment, and continuing a checksum equals one pass.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "crc32c.h"

static void test_check_values(void **state)
{
    uint8_t zeros[32], ones[32];

    (void)state;
    memset(zeros, 0, sizeof(zeros));
    memset(ones, 0xff, sizeof(ones));
    /* RFC 3720, appendix B.4, and the usual "123456789" check value. */
    assert_int_equal(crc32c(0, "123456789", 9), 0xE3069283u);
    assert_int_equal(crc32c(0, zeros, sizeof(zeros)), 0x8A9136AAu);
    assert_int_equal(crc32c(0, ones, sizeof(ones)), 0x62A8AB43u);
    assert_int_equal(crc32c_portable(0, "123456789", 9), 0xE3069283u);
    assert_int_equal(crc32c(0, "", 0), 0u);
}

static void test_paths_agree(void **state)
{
    uint8_t buf[300];

    (void)state;
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)(i * 131 + 7);
    for (size_t off = 0; off < 8; off++)
        for (size_t len = 0; len + off <= sizeof(buf); len += 13)
            assert_int_equal(crc32c(0, buf + off, len),
                             crc32c_portable(0, buf + off, len));
}

static void test_continuation(void **state)
{
    uint8_t buf[100];

    (void)state;
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)i;
    for (size_t cut = 0; cut <= sizeof(buf); cut += 7)
        assert_int_equal(
            crc32c(crc32c(0, buf, cut), buf + cut, sizeof(buf) - cut),
            crc32c(0, buf, sizeof(buf)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check_values),
        cmocka_unit_test(test_paths_agree),
        cmocka_unit_test(test_continuation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
