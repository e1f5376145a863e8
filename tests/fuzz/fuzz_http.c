/*
 * fuzz_http.c - libFuzzer target for the HTTP route parser
 * (net__route_parse), which reads every request path and WebSocket upgrade
 * path before anything else looks at the request.
 *
 * The input is the path as lws hands it over (the query string is split off
 * and parsed by lws; our code only compares its values to constants).
 * Invariants: nothing is read past the path or written past the room
 * buffer (ASan: both are exact-size heap blocks); a room route names a
 * 1..RELAY_ROOM_ID_MAX byte id of URL-safe characters, NUL-terminated, that
 * the path spells; the canonical path of a route parses to the same route.
 */
#include "fuzz.h"
#include "internal.h"

static bool room_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           (ch >= '0' && ch <= '9') || ch == '-' || ch == '_';
}

static const char *suffix(enum net_route r)
{
    switch (r) {
    case NET_ROUTE_ROOM:
        return "";
    case NET_ROUTE_CONNECT:
        return "/connect";
    case NET_ROUTE_SEND:
        return "/send";
    default:
        return NULL;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *room = malloc(RELAY_ROOM_ID_MAX + 1), canon[128], room2[80];
    enum net_route route, route2;
    size_t room_len, room_len2;
    bool ok;

    CHECK(room != NULL);
    ok = net__route_parse((const char *)data, size, &route, room, &room_len);
    CHECK(ok == (route != NET_ROUTE_NONE));
    if (ok && suffix(route) != NULL) {
        int n;

        CHECK(room_len > 0 && room_len <= RELAY_ROOM_ID_MAX);
        CHECK(room[room_len] == '\0');
        for (size_t i = 0; i < room_len; i++)
            CHECK(room_char(room[i]));
        CHECK(size >= 6 + room_len && memcmp(data, "/room/", 6) == 0 &&
              memcmp(data + 6, room, room_len) == 0);
        n = snprintf(canon, sizeof(canon), "/room/%s%s", room, suffix(route));
        CHECK(n > 0 && (size_t)n < sizeof(canon));
        CHECK(net__route_parse(canon, (size_t)n, &route2, room2, &room_len2));
        CHECK(route2 == route);
        CHECK(same_bytes(room, room_len, room2, room_len2));
    }
    if (ok && route == NET_ROUTE_ADMIN)
        CHECK(size > 7 && memcmp(data, "/admin/", 7) == 0);
    if (ok && route == NET_ROUTE_UI)
        CHECK(size >= 3 && memcmp(data, "/ui", 3) == 0 &&
              (size == 3 || data[3] == '/'));
    free(room);
    return 0;
}
