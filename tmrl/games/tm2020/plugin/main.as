// tmrl-telemetry: streams the car's state to one TCP client on 127.0.0.1:<port> (default 9000).
//
// Every game frame while a car is driven, the plugin writes one 44-byte frame: 11 little-endian float32 in this
// order (the format of TMRL 0.7.1's plugin, read by tmrl.games.telemetry):
//   0 speed (km/h)   1 distance driven since the start (m)   2 x   3 y (up)   4 z
//   5 steering input [-1, 1]   6 gas input [0, 1]   7 braking (0/1)   8 race finished (0/1)   9 gear   10 rpm
// In menus nothing is written, so the Python side times out with a message saying what to do.

[Setting name="Port" description="TCP port on 127.0.0.1 the tmrl worker connects to" min=1024 max=65535]
int Setting_Port = 9000;

[Setting name="Log connections" description="Print connect / disconnect messages to the OpenPlanet log"]
bool Setting_Verbose = true;

float g_distance = 0.0f;
uint64 g_lastTime = 0;
int g_lastRaceTime = -1;

// The driven car's state, or null outside a race.
CSceneVehicleVisState@ CarState()
{
    return VehicleState::ViewingPlayerState();
}

CSmScriptPlayer@ ScriptPlayer(CSmArenaClient@ playground)
{
    if (playground is null || playground.GameTerminals.Length == 0) return null;
    auto player = cast<CSmPlayer>(playground.GameTerminals[0].GUIPlayer);
    if (player is null) return null;
    return cast<CSmScriptPlayer>(player.ScriptAPI);
}

bool RaceFinished(CSmArenaClient@ playground)
{
    if (playground is null || playground.GameTerminals.Length == 0) return false;
    return playground.GameTerminals[0].UISequence_Current == SGamePlaygroundUIConfig::EUISequence::Finish;
}

// Fill `buf` with one frame; false when no car is being driven (nothing to send).
bool BuildFrame(MemoryBuffer@ buf)
{
    auto app = cast<CTrackMania>(GetApp());
    if (app is null) return false;
    auto playground = cast<CSmArenaClient>(app.CurrentPlayground);
    auto state = CarState();
    if (playground is null || state is null) return false;

    // distance driven: integrate |velocity| over wall time; restart when the race time goes back (respawn at
    // start, restart) so it counts from the start line like TMRL's.
    uint64 now = Time::Now;
    float speed = state.WorldVel.Length();
    auto script = ScriptPlayer(playground);
    int raceTime = script is null ? -1 : script.CurrentRaceTime;
    if (raceTime < g_lastRaceTime || raceTime <= 0) g_distance = 0.0f;
    else if (g_lastTime > 0 && now > g_lastTime) g_distance += speed * float(now - g_lastTime) / 1000.0f;
    g_lastRaceTime = raceTime;
    g_lastTime = now;

    buf.Write(float(state.FrontSpeed * 3.6f));
    buf.Write(g_distance);
    buf.Write(state.Position.x);
    buf.Write(state.Position.y);
    buf.Write(state.Position.z);
    buf.Write(state.InputSteer);
    buf.Write(state.InputGasPedal);
    buf.Write(state.InputIsBraking ? 1.0f : 0.0f);
    buf.Write(RaceFinished(playground) ? 1.0f : 0.0f);
    buf.Write(float(state.CurGear));
    buf.Write(VehicleState::GetRPM(state));
    buf.Seek(0);
    return true;
}

// Serve one client until it goes away (noticed at the first failed write: in menus nothing is written).
void Serve(Net::Socket@ client)
{
    while (true) {
        MemoryBuffer@ buf = MemoryBuffer(0);
        if (BuildFrame(buf) && !client.Write(buf)) return;  // the client closed or the connection broke
        yield();  // once per game frame
    }
}

void Main()
{
    while (true) {
        auto server = Net::Socket();
        if (!server.Listen("127.0.0.1", Setting_Port)) {
            warn("tmrl-telemetry: cannot listen on 127.0.0.1:" + Setting_Port + " (port in use?); retrying");
            sleep(1000);
            continue;
        }
        if (Setting_Verbose) print("tmrl-telemetry: waiting for a client on 127.0.0.1:" + Setting_Port);
        Net::Socket@ client = null;
        while (client is null) {
            @client = server.Accept();
            if (client is null) yield();
        }
        server.Close();  // one client at a time, like TMRL's plugin
        if (Setting_Verbose) print("tmrl-telemetry: client connected");
        g_lastTime = 0;
        Serve(client);
        client.Close();
        if (Setting_Verbose) print("tmrl-telemetry: client disconnected");
    }
}
