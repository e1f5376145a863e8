/*
 * test_settings.c - cluster settings in relay: RELAY_CMD_CONFIG changes a
 * limit deterministically, refuses unknown names and values out of range,
 * and the settings survive a snapshot round trip.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "relay.h"

static int apply(struct relay_state *s, uint8_t type, const char *key,
                 uint64_t num, const char *room, uint64_t counter)
{
    struct relay_cmd c;
    struct relay_effects eff;
    static const uint8_t val[] = {0xa1, 'x'}; /* "x" */

    memset(&c, 0, sizeof(c));
    c.type = (enum relay_cmd_type)type;
    c.origin.node = 1;
    c.origin.session = 7;
    c.origin.counter = counter;
    c.key = key;
    c.key_len = key != NULL ? strlen(key) : 0;
    c.compact_seq = num;
    c.room = room;
    c.room_len = room != NULL ? strlen(room) : 0;
    if (type == RELAY_CMD_PUSH) {
        c.action = RELAY_ACT_APPEND;
        c.compact_seq = 0;
        c.value = val;
        c.value_len = sizeof(val);
    }
    assert_int_equal(relay_state_apply(s, &c, 1000 + counter, &eff), RELAY_OK);
    return eff.status;
}

static void test_config_sets_and_refuses(void **state)
{
    struct relay_state *s;
    bool set;

    (void)state;
    assert_int_equal(relay_state_create(NULL, &s), RELAY_OK);
    assert_false(relay_state_configured(s));
    assert_int_equal(apply(s, RELAY_CMD_CONFIG, "max_rooms", 1, NULL, 1),
                     RELAY_OK);
    assert_int_equal(relay_setting_value(s, 2, &set), 1);
    assert_true(set);
    assert_int_equal(apply(s, RELAY_CMD_CREATE_ROOM, NULL, 0, "a", 2),
                     RELAY_OK);
    assert_int_not_equal(apply(s, RELAY_CMD_CREATE_ROOM, NULL, 0, "b", 3),
                         RELAY_OK);
    /* Unknown name, out of range: refused, nothing changes. */
    assert_int_equal(apply(s, RELAY_CMD_CONFIG, "max_nothing", 5, NULL, 4),
                     RELAY_EINVAL);
    assert_int_equal(apply(s, RELAY_CMD_CONFIG, "max_rooms", 0, NULL, 5),
                     RELAY_EINVAL);
    assert_int_equal(relay_setting_value(s, 2, &set), 1);
    assert_int_equal(apply(s, RELAY_CMD_CONFIG, "max_value_len", 4096, NULL, 6),
                     RELAY_OK);
    assert_int_equal(apply(s, RELAY_CMD_CONFIG, "max_room_bytes", 8192, NULL, 7),
                     RELAY_OK);
    assert_true(relay_state_configured(s));
    relay_state_destroy(s);
}

static void test_settings_snapshot_roundtrip(void **state)
{
    struct relay_state *a, *b;
    uint8_t *buf, *buf2;
    size_t len, len2;
    bool set;

    (void)state;
    assert_int_equal(relay_state_create(NULL, &a), RELAY_OK);
    assert_int_equal(relay_state_create(NULL, &b), RELAY_OK);
    apply(a, RELAY_CMD_CONFIG, "max_room_bytes", 5000, NULL, 1);
    apply(a, RELAY_CMD_CONFIG, "dedupe_ttl_ms", 60000, NULL, 2);
    assert_int_equal(relay_state_snapshot(a, &buf, &len), RELAY_OK);
    assert_int_equal(relay_state_restore(b, buf, len), RELAY_OK);
    assert_int_equal(relay_setting_value(b, 1, &set), 5000);
    assert_true(set);
    assert_int_equal(relay_setting_value(b, 5, &set), 60000);
    assert_true(set);
    relay_setting_value(b, 0, &set);
    assert_false(set);
    assert_int_equal(relay_state_snapshot(b, &buf2, &len2), RELAY_OK);
    assert_memory_equal(buf, buf2, len);
    assert_int_equal(len, len2);
    free(buf);
    free(buf2);
    relay_state_destroy(a);
    relay_state_destroy(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_sets_and_refuses),
        cmocka_unit_test(test_settings_snapshot_roundtrip),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
