--[[
cascade.lua: Cascade prepaid authorization for FreeSWITCH 1.10 (mod_lua + mod_curl).
Contract: docs/switch-api.md. Admin guide: docs/switches.md.

One file, two entry points:

  1. In the dialplan, before the bridge (see dialplan.xml):
         <action application="lua" data="cascade.lua"/>
     POSTs /authorize. On 200 it arms `sched_hangup +<max_duration>` to run when the call is
     answered, and returns so the dialplan goes on to bridge. On anything else it rejects the call:
     402/403 are passed on with an X-Cascade-Reason header, a 409 (the call id is another call's)
     becomes 403 with its reason, everything else (timeout, connection error, 5xx, garbage) becomes
     503: fail closed.

  2. At hangup, as the api_hangup_hook the first entry point sets:
         lua cascade.lua complete
     POSTs /calls/{call_id}/complete with billsec and a disposition mapped from the hangup cause,
     retrying on timeouts and 5xx (Cascade makes repeats safe). Nothing is posted for a call Cascade
     refused (402, 403, 409).

The call id sent to Cascade is the channel's uuid, not the SIP Call-ID: see authorize() below.

Why api_hangup_hook and not session:setHangupHook(): a Lua hangup hook lives only as long as the
script that set it, and this script returns before the bridge. api_hangup_hook is a channel variable,
run by the core in the hangup state, after the hangup cause and the billsec/answer_epoch timestamps
are set (switch_core_session_hangup_state) and after the caller got its final response.
With session_in_hangup_hook=true the hook gets the session, so the completion reads the same
channel variables as the authorization.

Settings: channel variables, falling back to global variables (vars.xml):
  cascade_url          base URL, e.g. https://api.example.com (required)
  cascade_api_key      this switch's key, sent as X-Api-Key (required)
  cascade_timeout      whole seconds for each HTTP request, connect included (default 2)
  cascade_retries      completion attempts (default 3)
  cascade_account      the paying account (default: ${sip_auth_username}); not sent for inbound calls
  cascade_destination  the dialled digits, or the DID called (default: ${destination_number})
  cascade_direction    "outbound" (default) or "inbound": a carrier's call to one of your DIDs (see
                       dialplan_inbound.xml); Cascade says which client holds the DID
The script sets cascade_call_id (the channel uuid), cascade_decision and cascade_max_duration for
later use (and CDRs, which carry sip_call_id as well), and for an inbound call cascade_client (the
client that holds the DID, to ring).

JSON: the answers are parsed by the small decoder below rather than a library: FreeSWITCH ships no
JSON module for Lua on every 1.10 build (freeswitch.JSON() is recent), lua-cjson/dkjson would be one
more package on every switch, and the decoder keeps numbers as their source text, so nothing is ever
rounded through a float (the script only needs max_duration, an integer; money is never read).
Written for Lua 5.1 to 5.4 (mod_lua 1.10 is usually built against Lua 5.2).
]]

local SCRIPT = (argv and argv[0]) or "cascade.lua"
local MODE = (argv and argv[1]) or "authorize"

local function log(level, message)
	freeswitch.consoleLog(level, "cascade: " .. message .. "\n")
end

-- Channel variable (session, or the hangup event when there is no session), else global variable.
local function var(name)
	local value
	if session then
		value = session:getVariable(name)
	elseif env then
		value = env:getHeader(name) or env:getHeader("variable_" .. name)
	end
	if (value == nil or value == "") and freeswitch.getGlobalVariable then
		value = freeswitch.getGlobalVariable(name)
	end
	if value == "" then
		return nil
	end
	return value
end

-- A whole number of seconds as digits (leading zeros dropped), or nil. Never goes through a float.
local function whole(text)
	if type(text) ~= "string" or not text:match("^%d+$") then
		return nil
	end
	return (text:gsub("^0+(%d)", "%1"))
end

-- The digits of a decoded JSON number that is a whole number, or nil (see json_decode below).
local NUMBER = { __tostring = function(n) return n.text end }
local function json_whole(value)
	return getmetatable(value) == NUMBER and whole(value.text) or nil
end

-- Percent-encode everything but RFC 3986 unreserved characters (Call-ID "@" -> %40, "/" -> %2F).
local function urlencode(text)
	return (text:gsub("[^%w%-%._~]", function(c)
		return string.format("%%%02X", c:byte())
	end))
end

local JSON_ESCAPES = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
	["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }

local function json_string(text)
	return '"' .. text:gsub('[%c"\\]', function(c)
		return JSON_ESCAPES[c] or string.format("\\u%04x", c:byte())
	end) .. '"'
end

-- Minimal JSON decoder: objects, arrays, strings (all escapes), true/false/null. A number becomes
-- {text = "<its digits>"} (metatable NUMBER), never a Lua number, so it is not rounded through a float
-- and stays distinct from a string. Raises an error on malformed input (callers use pcall).
local json_decode
do
	local ESCAPED = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }

	local function utf8_char(cp)
		local floor = math.floor
		if cp < 0x80 then
			return string.char(cp)
		elseif cp < 0x800 then
			return string.char(0xC0 + floor(cp / 0x40), 0x80 + cp % 0x40)
		elseif cp < 0x10000 then
			return string.char(0xE0 + floor(cp / 0x1000), 0x80 + floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
		end
		return string.char(0xF0 + floor(cp / 0x40000), 0x80 + floor(cp / 0x1000) % 0x40,
			0x80 + floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
	end

	local function skip(s, i)
		return s:find("[^ \t\r\n]", i) or #s + 1
	end

	local value

	local function text(s, i) -- s:sub(i, i) == '"'
		local parts, j = {}, i + 1
		while true do
			local stop = s:find('["\\]', j)
			if not stop then
				error("unterminated string")
			end
			parts[#parts + 1] = s:sub(j, stop - 1)
			if s:sub(stop, stop) == '"' then
				return table.concat(parts), stop + 1
			end
			local e = s:sub(stop + 1, stop + 1)
			if e == "u" then
				local cp = tonumber(s:match("^%x%x%x%x", stop + 2) or "", 16)
				if not cp then
					error("bad \\u escape")
				end
				j = stop + 6
				local low = tonumber(s:match("^\\u(%x%x%x%x)", j) or "", 16)
				if cp >= 0xD800 and cp <= 0xDBFF and low and low >= 0xDC00 and low <= 0xDFFF then
					cp = 0x10000 + (cp - 0xD800) * 0x400 + (low - 0xDC00) -- surrogate pair
					j = j + 6
				end
				parts[#parts + 1] = utf8_char(cp)
			elseif ESCAPED[e] then
				parts[#parts + 1] = ESCAPED[e]
				j = stop + 2
			else
				error("bad escape")
			end
		end
	end

	function value(s, i)
		i = skip(s, i)
		local c = s:sub(i, i)
		if c == "{" then
			local object = {}
			i = skip(s, i + 1)
			if s:sub(i, i) == "}" then
				return object, i + 1
			end
			while true do
				if s:sub(i, i) ~= '"' then
					error("expected a key")
				end
				local key
				key, i = text(s, i)
				i = skip(s, i)
				if s:sub(i, i) ~= ":" then
					error("expected ':'")
				end
				object[key], i = value(s, i + 1)
				i = skip(s, i)
				c = s:sub(i, i)
				if c == "}" then
					return object, i + 1
				elseif c ~= "," then
					error("expected ',' or '}'")
				end
				i = skip(s, i + 1)
			end
		elseif c == "[" then
			local array = {}
			i = skip(s, i + 1)
			if s:sub(i, i) == "]" then
				return array, i + 1
			end
			while true do
				array[#array + 1], i = value(s, i)
				i = skip(s, i)
				c = s:sub(i, i)
				if c == "]" then
					return array, i + 1
				elseif c ~= "," then
					error("expected ',' or ']'")
				end
				i = i + 1
			end
		elseif c == '"' then
			return text(s, i)
		end
		local number = s:match("^-?%d+%.?%d*[eE]?[-+]?%d*", i)
		if number then
			return setmetatable({ text = number }, NUMBER), i + #number
		end
		for word, result in pairs({ ["true"] = true, ["false"] = false }) do
			if s:sub(i, i + #word - 1) == word then
				return result, i + #word
			end
		end
		if s:sub(i, i + 3) == "null" then
			return nil, i + 4
		end
		error("unexpected " .. (c == "" and "end of input" or "'" .. c .. "'"))
	end

	function json_decode(s)
		local result, i = value(s, 1)
		if skip(s, i) <= #s then
			error("trailing data")
		end
		return result
	end
end

local function decode(s)
	local ok, result = pcall(json_decode, s or "")
	if ok then
		return result
	end
	return nil
end

local function settings()
	local url, key = var("cascade_url"), var("cascade_api_key")
	-- mod_curl splits its arguments on spaces and strips quotes and backslashes: keep them out.
	if not url or not key or url:find("[%s'\\]") or key:find("[%s'\\]") then
		return nil
	end
	return {
		url = url:gsub("/+$", ""),
		key = key,
		timeout = tonumber(whole(var("cascade_timeout")) or "2"),
		retries = tonumber(whole(var("cascade_retries")) or "3"),
	}
end

--[[
POST a JSON body with mod_curl's `curl` API (FreeSWITCH 1.10 src/mod/applications/mod_curl/mod_curl.c):
    curl <url> timeout <s> append_headers <Name:value> content-type <type> json post <data>
mod_curl splits this line on spaces into at most 10 tokens (the 10th keeps the rest), so this call
uses exactly 10: "connect-timeout" does not fit, and `timeout` (CURLOPT_TIMEOUT) bounds the whole
request, connect included. The post data token is url-decoded by mod_curl, so the JSON is sent
percent-encoded: no spaces, quotes or backslashes reach the tokenizer. `json` output is
{"status_code": "...", "body": "...", "headers": [...]} ("exit_code" too on newer builds); a timeout
or a connection error gives status_code 0 and no body.
Returns the HTTP status (0 when there is none) and the body text.
]]
local function post(cfg, path, body)
	local args = table.concat({
		cfg.url .. path,
		"timeout", tostring(math.max(1, cfg.timeout)),
		"append_headers", "X-Api-Key:" .. cfg.key,
		"content-type", "application/json",
		"json",
		"post", urlencode(body),
	}, " ")
	local raw = freeswitch.API():execute("curl", args)
	local reply = decode(raw)
	if type(reply) ~= "table" then
		log("WARNING", "unreadable mod_curl output for " .. path .. ": " .. tostring(raw):sub(1, 120))
		return 0, ""
	end
	-- "200" from the cJSON builds (1.10), 200 from the older json-c ones
	local status = tonumber(tostring(reply.status_code or ""):match("^%d%d%d$") or "0")
	return status, type(reply.body) == "string" and reply.body or ""
end

-- Final SIP response, and the hangup cause used when `respond` is not available (non-SIP channel).
local REJECT = {
	[402] = { "402 Payment Required", "OUTGOING_CALL_BARRED" },
	[403] = { "403 Forbidden", "OUTGOING_CALL_BARRED" }, -- mod_sofia maps this cause to 403
	[503] = { "503 Service Unavailable", "NORMAL_TEMPORARY_FAILURE" }, -- and this one to 503
}

local function reject(code, reason)
	-- The reason as a header on the final response. Current mod_sofia sends a >= 400 `respond` at
	-- hangup, with the sip_rh_* headers; older builds answer at once with the sip_ph_* ones.
	session:setVariable("sip_rh_X-Cascade-Reason", reason)
	session:setVariable("sip_ph_X-Cascade-Reason", reason)
	if session:ready() then
		session:execute("respond", REJECT[code][1]) -- a >= 400 response also hangs the channel up
	end
	if session:ready() then
		session:hangup(REJECT[code][2])
	end
end

-- The "reason" of a refusal, if it is a plain word (it becomes a SIP header), else `fallback`.
local function reason_of(answer, fallback)
	return type(answer) == "table" and type(answer.reason) == "string" and answer.reason:match("^[%w_]+$")
		or fallback
end

-- How a call is named in the log: the Cascade call id (the uuid), and the SIP Call-ID when there is
-- one, to find the call in SIP traces. The Call-ID is the caller's text: control characters are masked.
local function label(call_id)
	local sip_call_id = var("sip_call_id")
	if not sip_call_id then
		return call_id
	end
	return call_id .. " (Call-ID " .. (sip_call_id:sub(1, 256):gsub("%c", "?")) .. ")"
end

local function authorize()
	local cfg = settings()
	local direction = var("cascade_direction") or "outbound"
	local inbound = direction == "inbound"
	local account = var("cascade_account") or var("sip_auth_username")
	local destination = var("cascade_destination") or var("destination_number")
	-- The call id is the channel's uuid: FreeSWITCH makes a new one for every channel, so it names this
	-- call attempt and nothing else, on this switch and any other. Not the SIP Call-ID: the caller
	-- chooses it, and Cascade answers an authorize that repeats an id with the same account and number,
	-- while that call is in progress, with the first answer and no new hold (a retry): a caller sending
	-- one Call-ID twice would get two calls on one hold.
	local call_id = var("uuid")
	-- One authorization per channel. Running again on this channel (the dialplan entered again, e.g.
	-- after a transfer) would send the same uuid: Cascade would take it as a retry of the first call
	-- (same number: a second bridge on the first hold) or refuse it with 409 (another number). And the
	-- dialplan has just reset cascade_decision, so the hook would report the first call FAILED, 0 s:
	-- free. End the channel instead, with the first decision restored, so the hook bills the first call.
	-- (A cascade_call_id copied from another channel, another uuid, is not this channel's: ask.)
	if call_id and var("cascade_call_id") == call_id then
		log("ERR", label(call_id) .. ": cascade.lua already ran on this channel; not asking again, ending the call")
		session:setVariable("cascade_decision", var("cascade_max_duration") and "authorized" or "failed")
		return reject(503, "unavailable")
	end
	if not cfg or not (account or inbound) or not destination or not call_id
			or (direction ~= "outbound" and not inbound) then
		log("ERR", "cascade_url/cascade_api_key unset or invalid, no account/destination/uuid, or cascade_direction "
			.. "neither outbound nor inbound: failing closed")
		return reject(503, "unavailable")
	end
	if session:answered() then
		log("WARNING", label(call_id) .. ": channel already answered; billsec and the limit count from that answer")
	end

	-- Arm the completion before asking. Whatever happens next (the caller cancels while we wait, the
	-- answer is lost in a timeout after Cascade held the money), the ending gets reported; the hook
	-- skips calls Cascade refused (nothing is held for them).
	session:setVariable("cascade_call_id", call_id)
	session:setVariable("cascade_decision", "pending")
	session:setVariable("session_in_hangup_hook", "true")
	session:setVariable("api_hangup_hook", "lua " .. SCRIPT .. " complete")

	local fields = {
		inbound and '"direction":"inbound"' or '"account":' .. json_string(account),
		'"destination":' .. json_string(destination),
		'"call_id":' .. json_string(call_id),
	}
	local caller = var("caller_id_number")
	if caller then
		fields[#fields + 1] = '"caller_id":' .. json_string(caller)
	end
	local status, body = post(cfg, "/authorize", "{" .. table.concat(fields, ",") .. "}")
	local answer = decode(body)

	if status == 200 then
		local max = type(answer) == "table" and answer.authorized == true and json_whole(answer.max_duration)
		if max and max ~= "0" then
			session:setVariable("cascade_decision", "authorized")
			session:setVariable("cascade_max_duration", max)
			-- Runs when the call is answered, so the limit counts from answer like billsec does.
			session:setVariable("execute_on_answer", "sched_hangup +" .. max .. " ALLOTTED_TIMEOUT")
			if inbound and type(answer.client_id) == "string" then
				session:setVariable("cascade_client", answer.client_id)
			end
			log("INFO", label(call_id) .. ": authorized for " .. max .. " s" .. (inbound and " (inbound)" or ""))
			return
		end
		log("ERR", label(call_id) .. ": 200 without a usable max_duration: failing closed")
	elseif status == 402 or status == 403 then
		local reason = reason_of(answer, "refused")
		session:setVariable("cascade_decision", "refused")
		log("INFO", label(call_id) .. ": refused, " .. status .. " " .. reason)
		return reject(status, reason)
	elseif status == 409 then
		-- call_id_in_use (another call has this id: another account, number or switch) or call_ended
		-- (this same request again, after its call ended). Cascade holds nothing for this channel, and
		-- the id names another call: a completion would bill THAT call (a FAILED, 0 s one would make it
		-- free). Refuse like a 403, and mark the call refused so the hook posts nothing.
		local reason = reason_of(answer, "refused")
		session:setVariable("cascade_decision", "refused")
		log("WARNING", label(call_id) .. ": refused, 409 " .. reason
			.. ": the id is another call's, no completion will be posted")
		return reject(403, reason)
	else
		log("WARNING", label(call_id) .. ": /authorize gave " .. (status == 0 and "no answer" or status)
			.. ": failing closed")
	end
	-- Fail closed. The hook still reports FAILED, which releases a hold if Cascade did authorize.
	session:setVariable("cascade_decision", "failed")
	return reject(503, "unavailable")
end

local NO_ANSWER = { NO_ANSWER = true, NO_USER_RESPONSE = true, ORIGINATOR_CANCEL = true }

-- billsec and disposition of the ending, from the A leg's variables at hangup.
local function ending()
	local billsec = whole(var("billsec")) or "0"
	if (var("answer_epoch") or "0") ~= "0" or billsec ~= "0" then
		return billsec, "ANSWERED" -- whatever ended it: either side, the sched_hangup limit, media timeout
	end
	local cause = var("hangup_cause") or ""
	local originate = var("originate_disposition") -- the bridge's outcome, if the dialplan went on after it
	if (cause == "" or cause == "NORMAL_CLEARING") and originate and originate ~= "SUCCESS" then
		cause = originate
	end
	if cause == "USER_BUSY" then
		return "0", "BUSY"
	elseif NO_ANSWER[cause] then
		return "0", "NO ANSWER"
	end
	return "0", "FAILED"
end

-- What a 409 completion_conflict says stands: "ANSWERED 42 s, charged 1.400000". The charge is
-- copied as text, never read as a number.
local function applied_of(body)
	local answer = decode(body)
	local applied = type(answer) == "table" and answer.applied
	if type(applied) ~= "table" then
		return "unreadable answer"
	end
	local disposition = type(applied.disposition) == "string" and applied.disposition:match("^[%u ]+$") or "?"
	local text = disposition .. " " .. (json_whole(applied.billsec) or "?") .. " s"
	local charged = type(applied.charged) == "string" and applied.charged:match("^%-?%d+%.?%d*$")
	return charged and text .. ", charged " .. charged or text
end

local function complete()
	local call_id, decision = var("cascade_call_id"), var("cascade_decision")
	-- refused: 402, 403 or 409; Cascade holds nothing, and after a 409 the id is another call's.
	if not call_id or decision == "refused" then
		return
	end
	local cfg = settings()
	if not cfg then
		log("ERR", label(call_id) .. ": cascade_url/cascade_api_key unset: completion not sent")
		return
	end
	local billsec, disposition = "0", "FAILED"
	if decision == "authorized" then
		billsec, disposition = ending()
	end
	local body = '{"billsec":' .. billsec .. ',"disposition":' .. json_string(disposition) .. "}"
	local path = "/calls/" .. urlencode(call_id) .. "/complete"
	local attempts = math.max(1, cfg.retries)
	for attempt = 1, attempts do
		local status, reply = post(cfg, path, body)
		if status >= 200 and status < 300 then
			log("INFO", label(call_id) .. ": completed, " .. disposition .. " " .. billsec .. " s")
			return
		elseif status == 409 then
			-- completion_conflict: the call was already billed with another billsec or disposition (say a
			-- completion posted from the CDR first). That bill stands; a retry would get the same answer.
			log("ERR", label(call_id) .. ": completion " .. disposition .. " " .. billsec
				.. " s conflicts with the one Cascade applied (" .. applied_of(reply) .. "), not retried")
			return
		elseif status >= 400 and status < 500 and status ~= 408 and status ~= 429 then
			-- 400, 401, 404 (unknown_call: not authorized by this switch's key) and the like: the same again.
			log("ERR", label(call_id) .. ": completion refused with " .. status .. ", not retried")
			return
		end
		-- 0 (timeout, connection error), 5xx, 408, 429: try again after a short pause.
		if attempt < attempts then
			freeswitch.msleep(500 * attempt)
		end
	end
	log("ERR", label(call_id) .. ": completion not delivered after " .. attempts .. " attempts ("
		.. disposition .. " " .. billsec .. " s); post it from the CDR")
end

-- A Lua error must not let the dialplan go on to the bridge unauthorized: reject, and say why.
if MODE == "complete" then
	local ok, err = pcall(complete)
	if not ok then
		log("ERR", "completion failed: " .. tostring(err))
	end
elseif session then
	local ok, err = pcall(authorize)
	if not ok then
		log("ERR", "authorization failed: " .. tostring(err) .. ": failing closed")
		pcall(session.setVariable, session, "cascade_decision", "failed")
		pcall(reject, 503, "unavailable")
	end
else
	log("ERR", "run me from the dialplan (lua " .. SCRIPT .. ") or as api_hangup_hook (lua " .. SCRIPT .. " complete)")
end
