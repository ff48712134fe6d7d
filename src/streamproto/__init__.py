"""streamproto: streaming channels over one connection, with a sans-IO core."""
