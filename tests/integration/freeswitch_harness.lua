--[[
Runs integrations/freeswitch/cascade.lua under plain Lua, with a stand-in for the parts of the
FreeSWITCH mod_lua API it may use. Driven by tests/integration/test_switch_recipes.py.

    lua5.3 freeswitch_harness.lua <script.lua> <scenario.lua>

The scenario file returns a table:
    argv          the script's argv ([0] = script name, [1] = "complete" for the hangup hook)
    vars          channel variables; globals: global variables (channel lookups fall back to them)
    session       true: a `session` global (the dialplan, or api_hangup_hook with session_in_hangup_hook)
    env           true: an `env` event whose headers are the channel variables (api_hangup_hook)
    ready, answered   the channel's state when the script starts
    hangup_during_api the caller hangs up while the first HTTP request is in flight
    api_error     freeswitch.API():execute raises a Lua error

Everything the script does is written to stdout as one JSON object per line: {"ev": "set" | "execute"
| "hangup" | "log" | "api" | "sleep" | "error" | "end", ...}. Strings are written byte by byte (\u00XX
for bytes >= 0x80); the driver turns them back into UTF-8. After each "api" event the harness reads one
line from stdin: the API's reply, hex-encoded. Unknown members of session/freeswitch/env, reads of
unknown globals and assignments to new globals are errors, so a typo in the script fails the test.
]]

local script_path, scenario_path = arg[1], arg[2]
local scenario = dofile(scenario_path)

-- JSON output -------------------------------------------------------------------------------------

local encode

local function encode_string(s)
	return '"' .. s:gsub('[%c"\\\128-\255]', function(c)
		return string.format("\\u%04x", c:byte())
	end) .. '"'
end

function encode(v)
	local kind = type(v)
	if kind == "nil" then
		return "null"
	elseif kind == "boolean" then
		return tostring(v)
	elseif kind == "number" then
		return string.format("%.17g", v)
	elseif kind == "string" then
		return encode_string(v)
	elseif kind == "table" then
		local keys = {}
		for k in pairs(v) do
			keys[#keys + 1] = tostring(k)
		end
		table.sort(keys)
		local parts = {}
		for _, k in ipairs(keys) do
			parts[#parts + 1] = encode_string(k) .. ":" .. encode(v[k] == nil and v[tonumber(k)] or v[k])
		end
		return "{" .. table.concat(parts, ",") .. "}"
	end
	return encode_string("<" .. kind .. ">")
end

local function emit(event)
	io.stdout:write(encode(event), "\n")
	io.stdout:flush()
end

-- State -------------------------------------------------------------------------------------------

local vars = {}
for k, v in pairs(scenario.vars or {}) do
	vars[k] = v
end
local globals = scenario.globals or {}
local state = { ready = scenario.ready ~= false, answered = scenario.answered == true, api_calls = 0 }

local function strict(name, members)
	return setmetatable({}, {
		__index = function(_, key)
			local member = members[key]
			if member == nil then
				error(name .. " has no member '" .. tostring(key) .. "' in this stand-in", 2)
			end
			return member
		end,
		__newindex = function(_, key)
			error("assignment to " .. name .. "." .. tostring(key), 2)
		end,
	})
end

local function string_arg(value, what)
	if type(value) ~= "string" then
		error(what .. " must be a string, got " .. type(value), 3)
	end
	return value
end

local function hang_up(cause)
	state.ready = false
	if vars.hangup_cause == nil then
		vars.hangup_cause = cause
	end
end

-- session -----------------------------------------------------------------------------------------

local session_object = strict("session", {
	getVariable = function(_, name)
		string_arg(name, "getVariable's name")
		local value = vars[name]
		if value == nil then
			value = globals[name] -- switch_channel_get_variable falls back to global variables
		end
		return value
	end,
	setVariable = function(_, name, value)
		string_arg(name, "setVariable's name")
		string_arg(value, "setVariable's value")
		vars[name] = value
		emit({ ev = "set", name = name, value = value })
	end,
	execute = function(_, app, data)
		string_arg(app, "execute's application")
		emit({ ev = "execute", app = app, data = data })
		if app == "respond" then
			local code = tonumber((data or ""):match("^(%d+)") or "")
			if code and code >= 400 and not state.answered then
				hang_up("RESPONDED_" .. code) -- mod_sofia hangs up after a >= 400 respond
			end
		end
	end,
	hangup = function(_, cause)
		emit({ ev = "hangup", cause = cause })
		hang_up(cause or "NORMAL_CLEARING")
	end,
	ready = function()
		return state.ready
	end,
	answered = function()
		return state.answered
	end,
})

local env_object = strict("env", {
	getHeader = function(_, name)
		string_arg(name, "getHeader's name")
		return vars[name] or vars[name:match("^variable_(.+)$") or ""]
	end,
})

-- freeswitch --------------------------------------------------------------------------------------

local api_object = strict("API", {
	execute = function(_, command, args)
		string_arg(command, "API command")
		if scenario.api_error then
			emit({ ev = "api_failed", cmd = command, args = args })
			error("simulated failure inside freeswitch.API():execute")
		end
		emit({ ev = "api", cmd = command, args = args })
		state.api_calls = state.api_calls + 1
		local line = io.read("*l")
		if line == nil then
			error("the driver closed stdin")
		end
		if scenario.hangup_during_api and state.api_calls == 1 then
			hang_up("ORIGINATOR_CANCEL")
		end
		return (line:gsub("%x%x", function(h)
			return string.char(tonumber(h, 16))
		end))
	end,
})

local freeswitch_object = strict("freeswitch", {
	consoleLog = function(level, message)
		emit({ ev = "log", level = level, msg = message })
	end,
	API = function()
		return api_object
	end,
	msleep = function(ms)
		emit({ ev = "sleep", ms = ms })
	end,
	getGlobalVariable = function(name)
		return globals[name]
	end,
})

-- Globals as mod_lua sets them, then strict ---------------------------------------------------------

rawset(_G, "freeswitch", freeswitch_object)
local argv = scenario.argv or {}
rawset(_G, "argv", argv)
if scenario.session ~= false then
	rawset(_G, "session", session_object)
end
if scenario.env then
	rawset(_G, "env", env_object)
end

local MAY_BE_ABSENT = { session = true, env = true, stream = true, argv = true }
setmetatable(_G, {
	__index = function(_, key)
		if MAY_BE_ABSENT[key] then
			return nil
		end
		error("read of undefined global '" .. tostring(key) .. "'", 2)
	end,
	__newindex = function(_, key)
		error("the script assigns the global '" .. tostring(key) .. "'", 2)
	end,
})

-- Run: mod_lua logs a script's error and carries on; so does this, as an "error" event.
local chunk, load_error = loadfile(script_path)
if not chunk then
	emit({ ev = "error", msg = load_error })
else
	local ok, run_error = pcall(chunk)
	if not ok then
		emit({ ev = "error", msg = tostring(run_error) })
	end
end
emit({ ev = "end", vars = vars, ready = state.ready })
