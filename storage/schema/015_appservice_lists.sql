-- Application services' own public room lists (Client-Server API, PUT
-- /directory/list/appservice/{networkId}/{roomId}): a bridge publishes its
-- portal rooms per network, apart from the server's main list. The list's
-- third_party_instance_id is "<service id>|<network id>".
CREATE TABLE appservice_room_lists (
    service_id TEXT NOT NULL,
    network_id TEXT NOT NULL,
    room_id    TEXT NOT NULL,
    PRIMARY KEY (service_id, network_id, room_id)
);
